"""Step 1: list every object (docs/FORMAT.md 11.1). Codes: `empty`, `unexpected-object`.

Witness records (FORMAT.md section 16) are ledger objects too: listed here, checked in
step 6 only when witness keys are given."""

from __future__ import annotations

from dataclasses import dataclass, field

from auditlock.ledger.names import ObjectName, parse_name
from auditlock.ledger.report import Finding
from auditlock.ledger.verify_findings import Place
from auditlock.ledger.verify_witness import WitnessObjects
from auditlock.ledger.witness import parse_witness_name


@dataclass
class EpochObjects:
    """The objects of one epoch of one stream, by their names."""

    checkpoints: dict[int, str] = field(default_factory=dict)  # index -> object name
    segments: list[ObjectName] = field(default_factory=list)


@dataclass
class Inventory:
    """Every object under the URL, sorted into what FORMAT.md section 2 says it is."""

    names: list[str] = field(default_factory=list)
    keys: list[ObjectName] = field(default_factory=list)
    rotations: list[ObjectName] = field(default_factory=list)
    certificates: list[ObjectName] = field(default_factory=list)
    streams: dict[str, dict[int, EpochObjects]] = field(default_factory=dict)
    witnesses: dict[str, WitnessObjects] = field(default_factory=dict)

    def checkpoint_names(self) -> set[str]:
        return {
            name
            for epochs in self.streams.values()
            for epoch in epochs.values()
            for name in epoch.checkpoints.values()
        }


def list_objects(names: list[str]) -> tuple[Inventory, list[Finding]]:
    """Sort the listed names; `unexpected-object` for a name FORMAT.md does not define,
    `empty` when there is nothing at all."""
    found: list[Finding] = []
    inventory = Inventory(names=names)
    for name in names:
        parsed = parse_name(name)
        if parsed is None and name.startswith("witness/"):
            witnessed = parse_witness_name(name)
            if witnessed is not None:
                objects = inventory.witnesses.setdefault(witnessed.witness, WitnessObjects())
                if witnessed.token:
                    objects.tokens.add(witnessed.seq)
                else:
                    objects.records[witnessed.seq] = name
                continue
        if parsed is None:
            found.append(
                Place().find(
                    "unexpected-object", "not a ledger object name (FORMAT.md)", object=name
                )
            )
        elif parsed.kind == "key":
            inventory.keys.append(parsed)
        elif parsed.kind == "rotation":
            inventory.rotations.append(parsed)
        elif parsed.kind == "certificate":
            inventory.certificates.append(parsed)
        elif parsed.kind == "claim":
            pass  # the issuer's bookkeeping (FORMAT.md section 9): nothing to verify
        else:
            epochs = inventory.streams.setdefault(parsed.stream, {})
            epoch = epochs.setdefault(parsed.epoch, EpochObjects())
            if parsed.kind == "checkpoint":
                epoch.checkpoints[parsed.index] = name
            else:
                epoch.segments.append(parsed)
    if not names:
        found.append(Place().find("empty", "no ledger objects found at this URL"))
    return inventory, found
