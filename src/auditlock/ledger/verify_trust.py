"""Step 2: load the keys and rotation records; build the trusted key sets (docs/FORMAT.md
11.2 and section 9).

Codes: `key-corrupt`, `key-mismatch`, `object-unreadable` (keys); `rotation-corrupt`,
`rotation-mismatch`, `rotation-unverifiable`, `rotation-bad-signature` (rotations).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from auditlock.ledger.errors import FormatError, KeyFileError, SignatureError
from auditlock.ledger.keys import key_id, load_public_key, public_pem
from auditlock.ledger.limits import MAX_KEY_BYTES, MAX_ROTATION_BYTES
from auditlock.ledger.names import ObjectName
from auditlock.ledger.report import Finding
from auditlock.ledger.rotation import decode_rotation
from auditlock.ledger.verify_findings import Place
from auditlock.sinks.base import DestinationError, ObjectNotFound, ObjectUnreadable

Read = Callable[[str, int], bytes]


@dataclass
class Trust:
    """The keys a checkpoint may be signed by (FORMAT.md section 9, "Trust")."""

    public: dict[str, Ed25519PublicKey] = field(default_factory=dict)  # id -> usable key
    rotations: dict[str, set[str]] = field(default_factory=dict)  # old id -> new ids
    anchors: set[str] = field(default_factory=set)  # ids of the --public-key keys
    stored: set[str] = field(default_factory=set)  # ids of the keys/<id>.pub listed

    def reachable(self, start: set[str]) -> set[str]:
        """`start` and every key a chain of valid rotation records leads to from it."""
        seen = set(start)
        queue = deque(start)
        while queue:
            for nxt in self.rotations.get(queue.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def anchored(self) -> set[str] | None:
        """The keys trusted for every stream; None: each stream's first key decides."""
        return self.reachable(self.anchors) if self.anchors else None

    def describe(self) -> str:
        if self.anchors:
            return "anchored to --public-key " + ", ".join(sorted(k[:16] for k in self.anchors))
        return (
            "no --public-key given: each stream's first key and its signed rotations, "
            "as stored beside the data (someone able to rewrite the whole store could "
            "forge them; pass --public-key to anchor trust)"
        )

    # Keys travel to `verify --jobs` worker processes as their raw bytes.
    def __getstate__(self) -> dict[str, Any]:
        raw = {k: v.public_bytes(Encoding.Raw, PublicFormat.Raw) for k, v in self.public.items()}
        return {**self.__dict__, "public": raw}

    def __setstate__(self, state: dict[str, Any]) -> None:
        public = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in state["public"].items()}
        self.__dict__.update({**state, "public": public})


def load_trust(
    anchors: list[Ed25519PublicKey],
    keys: list[ObjectName],
    rotations: list[ObjectName],
    read: Read,
    guard: Callable[..., Any],
    add: Callable[[list[Finding]], None],
) -> Trust:
    """The trust of this store: the --public-key keys, the stored keys that load
    (`load_key`), and the rotations that verify (`load_rotation`)."""
    trust = Trust(anchors={key_id(k) for k in anchors}, stored={k.key_id for k in keys})
    for pub in anchors:
        trust.public[key_id(pub)] = pub
    for obj in keys:
        with guard(object=obj.name):
            loaded, found = load_key(obj, read)
            add(found)
            if loaded is not None:
                trust.public[obj.key_id] = loaded
    for obj in rotations:
        with guard(object=obj.name):
            add(load_rotation(obj, read, trust))
    return trust


def load_key(obj: ObjectName, read: Read) -> tuple[Ed25519PublicKey | None, list[Finding]]:
    """A stored public key. `key-corrupt` (not exactly the PEM of one key),
    `key-mismatch` (its id is not its name), `object-unreadable`."""
    here = Place()
    try:
        data = read(obj.name, MAX_KEY_BYTES)
        pub = load_public_key(data)
        if public_pem(pub) != data:  # one stored form: PEM parsers skip text around it
            raise KeyFileError("not exactly the PEM SubjectPublicKeyInfo of its key")
    except (KeyFileError, ObjectNotFound, ObjectUnreadable) as exc:
        return None, [here.find("key-corrupt", str(exc), object=obj.name)]
    except DestinationError as exc:
        return None, [here.find("object-unreadable", str(exc), object=obj.name)]
    if key_id(pub) != obj.key_id:
        return None, [
            here.find(
                "key-mismatch",
                f"holds key {key_id(pub)[:16]}…, not the key its name says",
                object=obj.name,
            )
        ]
    return pub, []


def load_rotation(obj: ObjectName, read: Read, trust: Trust) -> list[Finding]:
    """A rotation record; on success its new key joins `trust`. `rotation-corrupt`,
    `rotation-mismatch`, `rotation-unverifiable` (old key not stored),
    `rotation-bad-signature`, `object-unreadable`."""
    here = Place()
    try:
        record = decode_rotation(read(obj.name, MAX_ROTATION_BYTES))
    except (FormatError, ObjectNotFound, ObjectUnreadable) as exc:
        return [here.find("rotation-corrupt", str(exc), object=obj.name)]
    except DestinationError as exc:
        return [here.find("object-unreadable", str(exc), object=obj.name)]
    if (record.old_key_id, record.new_key_id) != (obj.old_key_id, obj.key_id):
        return [
            here.find("rotation-mismatch", "record names other keys than its name", object=obj.name)
        ]
    old = trust.public.get(record.old_key_id)
    if old is None:
        return [here.find("rotation-unverifiable", "the old key is not stored", object=obj.name)]
    try:
        record.verify_with(old)
    except SignatureError as exc:
        return [here.find("rotation-bad-signature", str(exc), object=obj.name)]
    trust.public.setdefault(record.new_key_id, record.new_public)
    trust.rotations.setdefault(record.old_key_id, set()).add(record.new_key_id)
    return []
