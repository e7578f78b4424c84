"""`auditlock evidence`: build an evidence package from a verified trail (layout.py).

    trail = review.load(url, options)           # verified, or from the cache
    summary = build_evidence(trail, since_ns=..., until_ns=..., sample_size=25,
                             seed="Q3-2026", report_html=..., out=Path("evidence.tar.gz"))

The population is the events verification accepted in the period (the review cache); the
sample is drawn in DuckDB with the key of sample.py and checked again here in Python. Each
sampled event is proven against the newest checkpoint of its epoch (ledger.proof), and
every proof is checked before it is packed, with the key that verification accepted: a
store that changed since it was verified fails here, not at the auditor's desk.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.evidence import layout
from auditlock.evidence.archive import write_archive
from auditlock.evidence.errors import EvidenceError
from auditlock.evidence.sample import ALGORITHM, sample_key, sample_key_sql
from auditlock.ledger.limits import MAX_KEY_BYTES, MAX_ROTATION_BYTES
from auditlock.ledger.names import parse_name
from auditlock.ledger.timestamps import format_ns
from auditlock.report.checkpoints import StoredCheckpoint, signed_checkpoints
from auditlock.sinks.base import Destination


@dataclass(frozen=True)
class EvidenceSummary:
    out: Path
    bytes: int
    manifest_sha256: str
    members: int
    checkpoints: int
    population: int
    sampled: int


def build_evidence(
    trail: Any,
    *,
    since_ns: int | None,
    until_ns: int | None,
    sample_size: int,
    seed: str,
    report_html: str,
    out: Path,
    anchors: Sequence[Ed25519PublicKey] = (),
    memory_limit: str | None = None,
) -> EvidenceSummary:
    """Write the package to `out`; EvidenceError when an event cannot be proven."""
    from auditlock import sinks
    from auditlock.ledger.proof import build_proofs

    destination = sinks.open(trail.url)
    try:
        population, rows = _draw(trail, since_ns, until_ns, sample_size, seed, memory_limit)
        stored = signed_checkpoints(destination, trail.report, anchors)
        keys = {c.signed.checkpoint.key_id for c in stored}
        by_epoch: dict[tuple[str, int], list[int]] = {}
        for row in rows:
            by_epoch.setdefault((row["stream"], row["epoch"]), []).append(row["seq"])
        proofs: dict[tuple[str, int, int], dict[str, Any]] = {}
        for (stream, epoch), seqs in sorted(by_epoch.items()):
            for seq, proof in build_proofs(destination, stream, epoch, seqs).items():
                proofs[(stream, epoch, seq)] = proof
        members: dict[str, bytes] = {
            layout.REPORT: report_html.encode(),
            layout.VERIFY: (json.dumps(trail.report, indent=2) + "\n").encode(),
        }
        members.update(_keys(destination))
        members.update(_checkpoints(stored, since_ns, until_ns, proofs.values()))
    finally:
        destination.close()
    sample_lines = []
    for row in rows:
        proof = proofs[(row["stream"], row["epoch"], row["seq"])]
        _self_check(proof, row, stored, keys, anchors)
        name = layout.proof_member(row["rank"])
        members[name] = (json.dumps(proof, indent=1) + "\n").encode()
        sample_lines.append(json.dumps({**row, "proof": name}, sort_keys=True))
    members[layout.SAMPLE] = ("\n".join(sample_lines) + "\n" if sample_lines else "").encode()
    created = time.time_ns()
    manifest = {
        "format": layout.FORMAT,
        "created": format_ns(created),
        "source": trail.url,
        "period": {
            "since": format_ns(since_ns) if since_ns is not None else None,
            "until": format_ns(until_ns) if until_ns is not None else None,
        },
        "sample": {
            "algorithm": ALGORITHM,
            "seed": seed,
            "requested": sample_size,
            "population": population,
            "drawn": len(rows),
        },
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(members.items())
        },
    }
    manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    members[layout.MANIFEST] = manifest_bytes
    packed = write_archive(out, members, mtime=created // 1_000_000_000)
    return EvidenceSummary(
        out=out,
        bytes=len(packed),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        members=len(members),
        checkpoints=sum(1 for name in members if name.endswith(".ckpt")),
        population=population,
        sampled=len(rows),
    )


def _draw(
    trail: Any,
    since_ns: int | None,
    until_ns: int | None,
    size: int,
    seed: str,
    memory_limit: str | None,
) -> tuple[int, list[dict[str, Any]]]:
    """(population, the sample's rows in rank order)."""
    from auditlock.review.engine import Engine, Filters
    from auditlock.review.schema import sql_string

    options: dict[str, Any] = {} if memory_limit is None else {"memory_limit": memory_limit}
    with Engine([trail], Filters(since_ns=since_ns, until_ns=until_ns), **options) as engine:
        ((population,),) = engine.sql("SELECT count(*) FROM events").fetchall()
        key = sample_key_sql(sql_string(seed))
        drawn = engine.sql(
            f"SELECT {key} AS k, stream, epoch, seq, id, time_ns FROM events "
            f"ORDER BY k, stream, epoch, seq LIMIT {int(size)}"
        ).fetchall()
    rows = []
    for rank, (k, stream, epoch, seq, event_id, time_ns) in enumerate(drawn, start=1):
        if sample_key(seed, stream, epoch, seq) != k:  # the two definitions must agree
            raise EvidenceError("sample-mismatch", "DuckDB's sample key differs from sample.py's")
        rows.append({"rank": rank, "key": k, "stream": stream, "epoch": int(epoch),
                     "seq": int(seq), "id": event_id, "time": format_ns(int(time_ns))})  # fmt: skip
    return int(population), rows


def _keys(destination: Destination) -> dict[str, bytes]:
    members = {}
    for name in destination.list("keys/"):
        parsed = parse_name(name)
        if parsed is None or parsed.kind not in ("key", "rotation", "certificate"):
            continue
        limit = MAX_KEY_BYTES if parsed.kind == "key" else MAX_ROTATION_BYTES
        members[layout.LEDGER + name] = destination.get(name, limit)
    return members


def _checkpoints(
    stored: list[StoredCheckpoint],
    since_ns: int | None,
    until_ns: int | None,
    proofs: Any,
) -> dict[str, bytes]:
    """The checkpoints inside the period, per epoch the last one before it (the state the
    period starts from) and the first one after it (it covers the period's last events),
    and the ones the proofs are made against."""
    chosen: dict[str, bytes] = {}
    by_epoch: dict[tuple[str, int], list[StoredCheckpoint]] = {}
    for c in stored:
        cp = c.signed.checkpoint
        by_epoch.setdefault((cp.stream, cp.epoch), []).append(c)
    for group in by_epoch.values():
        before = [
            c for c in group if since_ns is not None and c.signed.checkpoint.time_ns < since_ns
        ]
        after = [
            c for c in group if until_ns is not None and c.signed.checkpoint.time_ns >= until_ns
        ]
        inside = [c for c in group if c not in before and c not in after]
        for c in inside + before[-1:] + after[:1]:
            chosen[layout.LEDGER + c.name] = c.data
    by_name = {c.name: c for c in stored}
    for proof in proofs:
        name = proof["checkpoint"]["name"]
        packed = by_name.get(name)
        if packed is None:
            raise EvidenceError(
                "proof-checkpoint-mismatch",
                f"the proof of {proof['stream']} seq {proof['seq']} is made against {name}, "
                "which verification did not accept",
            )
        chosen[layout.LEDGER + name] = packed.data
    return chosen


def _self_check(
    proof: dict[str, Any],
    row: dict[str, Any],
    stored: list[StoredCheckpoint],
    keys: set[str],
    anchors: Sequence[Ed25519PublicKey],
) -> None:
    from auditlock.ledger.errors import ProofError
    from auditlock.ledger.keys import key_id, load_public_key
    from auditlock.ledger.proof import check_proof

    trusted = {key_id(k): k for k in anchors}
    cp_key = json.loads(proof["checkpoint"]["body"])["key_id"]
    key = trusted.get(cp_key)
    if key is None and proof.get("public_key") and cp_key in keys:
        key = load_public_key(proof["public_key"].encode())
    try:
        event = check_proof(proof, key)
    except ProofError as exc:
        raise EvidenceError("proof-invalid", f"{row['stream']} seq {row['seq']}: {exc}") from None
    if event.get("id") != row["id"]:
        raise EvidenceError(
            "sample-mismatch",
            f"{row['stream']} seq {row['seq']} holds another event than the cache",
        )
