"""Secret writes in the trail: which keys a Secret holds and a keyed hash of each value,
never the value (docs/operator.md, "Secret writes").

The API server's audit policy applies to every audit backend it runs, so Secrets stay at
Metadata level there (Request level would write their values into any log file backend
as well). The audit event therefore says who wrote which Secret but not what. For each
successful create/update/patch in a namespace a policy covers, the operator reads that
Secret once, right after the write, and records per data key HMAC-SHA256 under the
cluster's hash key (auditlock.ledger.value_hash) with the resourceVersion it saw. The
value read is the Secret as it was at that moment, not necessarily the bytes of this
write (a later write may already have landed), and the event says so
(`observed_after_write`, `observed_resource_version`). A delete records the key names
last seen for that Secret, when this operator saw one since it started.

The hash key lives in a Secret of the operator's namespace, created by the operator with
32 random bytes when absent, so it survives restarts, upgrades and reinstalls and the
hashes in a years-old trail can still be checked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from collections import OrderedDict
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter

from auditlock.ledger.value_hash import HMAC_SHA256, MIN_KEY_BYTES, key_id, value_hash
from auditlock.operator.kube import Kube, SecretSeen
from auditlock.operator.names import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("auditlock.operator.secret_hashes")

KEY_FIELD = "key"
WRITES = frozenset({"create", "update", "patch"})
# Bounds per audit batch: the API server waits for the answer, and the collector's own
# timeout (capture.COLLECTOR_TIMEOUT_SECONDS) comes after these reads.
MAX_READS_PER_BATCH = 256
CONCURRENT_READS = 8
READ_TIMEOUT_SECONDS = 2.0
# Key names remembered per Secret for its delete event (bounded; oldest forgotten first).
MAX_REMEMBERED = 10_000
MAX_KEYS = 256
MAX_KEY_NAME = 253

# Why a write's Secret was not hashed (details.secret.not_observed).
NOT_FOUND = "not-found"  # deleted before the operator read it
FORBIDDEN = "forbidden"
API_ERROR = "api-error"
TIMEOUT = "timeout"
NO_KEY = "no-hash-key"
BATCH_LIMIT = "batch-limit"
NO_NAME = "no-name"


Ref = tuple[str, str]  # (namespace, name) of a Secret


class HashKeyError(Exception):
    """The hash key Secret exists but does not hold a usable key."""


def load_or_create_key(kube: Kube, namespace: str, name: str) -> bytes:
    """The cluster's Secret hash key (blocking: run in a thread). Created with 32 random
    bytes when the Secret does not exist; another replica creating it first is fine."""
    for _ in range(3):
        data = kube.read_secret(namespace, name)
        if data is not None:
            try:
                key = base64.b64decode(data.get(KEY_FIELD) or "", validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) < MIN_KEY_BYTES:
                raise HashKeyError(
                    f"Secret {namespace}/{name} has no key '{KEY_FIELD}' of at least "
                    f"{MIN_KEY_BYTES} bytes; delete it to have the operator create one"
                )
            return key
        meta = {"labels": {"app.kubernetes.io/part-of": "auditlock", LABEL_MANAGED_BY: MANAGED_BY}}
        encoded = base64.b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode()
        kube.create_secret(namespace, name, {KEY_FIELD: encoded}, meta)
    raise HashKeyError(f"Secret {namespace}/{name} could not be read after creating it")


def summary(seen: SecretSeen, key: bytes) -> dict[str, Any]:
    """Key names with keyed hashes of their values (never the values)."""
    names = sorted(seen.values)
    out: dict[str, Any] = {
        "hash": HMAC_SHA256,
        "hash_key_id": key_id(key),
        "keys": {
            name[:MAX_KEY_NAME]: value_hash(seen.values[name], key) for name in names[:MAX_KEYS]
        },
    }
    if len(names) > MAX_KEYS:
        out["keys_not_listed"] = len(names) - MAX_KEYS
    if seen.type:
        out["type"] = seen.type[:MAX_KEY_NAME]
    return out


def _is_secret_event(event: dict[str, Any]) -> bool:
    target = event.get("target") or {}
    return bool(
        event.get("category") == "data"
        and target.get("resource") == "secrets"
        and event.get("outcome") == "success"
    )


class SecretObserver:
    """Adds `details.secret` to the Secret write events of an audit batch."""

    def __init__(
        self,
        kube: Kube | None,
        key: bytes | None,
        *,
        metrics: CollectorRegistry | None = None,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self.kube = kube
        self.key = key
        self.read_timeout = read_timeout
        # (namespace, name) -> (key names, resourceVersion) last seen
        self._last_seen: OrderedDict[Ref, tuple[list[str], str]] = OrderedDict()
        # event id -> details.secret of a write already observed: a batch the API server
        # sends again (the collector was down) keeps what was seen right after the write
        # and costs no second read.
        self._observed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.reads = Counter(
            "auditlock_operator_secret_reads",
            "Secrets read right after a write to hash their values, by outcome (observed, "
            "not-found, forbidden, api-error, timeout, no-hash-key, batch-limit, no-name).",
            ["outcome"],
            registry=metrics or CollectorRegistry(),
        )

    async def annotate(self, events: list[dict[str, Any]]) -> None:
        """Read each written Secret of the batch once (concurrently, bounded), then fill
        the events in order, so a delete after a write in the same batch names its keys."""
        wanted: list[Ref] = []
        for event in events:
            if _is_secret_event(event) and event.get("action") in WRITES:
                ref = _ref(event)
                known = str(event.get("id") or "") in self._observed
                if ref is not None and ref not in wanted and not known:
                    wanted.append(ref)
        seen = await self._read_all(wanted)
        for event in events:
            if not _is_secret_event(event):
                continue
            ref = _ref(event)
            action = event.get("action")
            details = event.setdefault("details", {})
            if action in WRITES:
                event_id = str(event.get("id") or "")
                if event_id in self._observed:
                    details["secret"] = dict(self._observed[event_id])
                    continue
                if ref is None:
                    self.reads.labels(NO_NAME).inc()
                    details["secret"] = {"observed_after_write": False, "not_observed": NO_NAME}
                    continue
                details["secret"] = self._write_details(ref, seen.get(ref, BATCH_LIMIT))
                if event_id and details["secret"]["observed_after_write"]:
                    self._observed[event_id] = details["secret"]
                    while len(self._observed) > MAX_REMEMBERED:
                        self._observed.popitem(last=False)
            elif action == "delete" and ref is not None:
                # Kept, not popped: a batch the API server sends again names them again.
                last = self._last_seen.get(ref)
                if last is not None:
                    names, version = last
                    details["secret"] = {"keys_last_seen": names,
                                         "last_seen_resource_version": version}  # fmt: skip

    def _write_details(self, ref: Ref, seen: SecretSeen | str) -> dict[str, Any]:
        if isinstance(seen, str):
            return {"observed_after_write": False, "not_observed": seen}
        assert self.key is not None  # _read_all reads nothing without a key
        out = summary(seen, self.key)
        out["observed_after_write"] = True
        out["observed_resource_version"] = seen.resource_version
        self._remember(ref, list(out["keys"]), seen.resource_version)
        return out

    def _remember(self, ref: Ref, names: list[str], version: str) -> None:
        self._last_seen[ref] = (names, version)
        self._last_seen.move_to_end(ref)
        while len(self._last_seen) > MAX_REMEMBERED:
            self._last_seen.popitem(last=False)

    async def _read_all(self, refs: list[Ref]) -> dict[Ref, SecretSeen | str]:
        out: dict[Ref, SecretSeen | str] = {}
        if not refs:
            return out
        if self.key is None or self.kube is None:
            self.reads.labels(NO_KEY).inc(len(refs))
            return dict.fromkeys(refs, NO_KEY)
        limit = asyncio.Semaphore(CONCURRENT_READS)

        async def one(ref: Ref) -> None:
            async with limit:
                out[ref] = await self._read(ref)

        await asyncio.gather(*(one(ref) for ref in refs[:MAX_READS_PER_BATCH]))
        for ref in refs[MAX_READS_PER_BATCH:]:
            self.reads.labels(BATCH_LIMIT).inc()
            out[ref] = BATCH_LIMIT
        return out

    async def _read(self, ref: Ref) -> SecretSeen | str:
        assert self.kube is not None
        namespace, name = ref
        try:
            seen = await asyncio.wait_for(
                asyncio.to_thread(self.kube.observe_secret, namespace, name, self.read_timeout),
                self.read_timeout + 0.5,
            )
        except TimeoutError:
            outcome: str = TIMEOUT
        except ApiException as exc:
            outcome = FORBIDDEN if exc.status == 403 else API_ERROR
            log.warning("Secret %s/%s written but not readable to hash it: %s %s", namespace,
                        name, exc.status, exc.reason)  # fmt: skip
        except Exception as exc:  # a network error must not fail the audit batch
            outcome = API_ERROR
            log.warning("Secret %s/%s written but not read to hash it: %s", namespace, name,
                        type(exc).__name__)  # fmt: skip
        else:
            if seen is None:
                self._last_seen.pop(ref, None)
                outcome = NOT_FOUND
            else:
                self.reads.labels("observed").inc()
                return seen
        self.reads.labels(outcome).inc()
        return outcome


def _ref(event: dict[str, Any]) -> Ref | None:
    target = event.get("target") or {}
    namespace, name = target.get("namespace"), target.get("name")
    if isinstance(namespace, str) and namespace and isinstance(name, str) and name:
        return namespace, name
    return None
