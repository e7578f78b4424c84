"""Certifying collectors' per-pod keys (docs/operator.md, "Per-pod keys"; the record is
FORMAT.md section 9, "Certificates").

A collector generates its Ed25519 key at start and POSTs the public half to
`/v1/certificates` on the operator's HTTPS server, with its projected ServiceAccount
token (audience `AUDIENCE`, short-lived, bound to its pod) as the bearer token:

    {"public_key": "<base64 raw 32 bytes>", "stream": "<cluster>_<namespace>_<pod>"}

The operator believes nothing in the request it has not checked with the API server:

1. TokenReview: the token is valid for `AUDIENCE` and names a ServiceAccount and, in its
   pod-bound claims (`authentication.kubernetes.io/pod-name` / `pod-uid`), a pod.
2. That pod exists now, has that UID and runs as that ServiceAccount, and a policy the
   operator serves selects it.
3. The stream asked for is the pod's stream id (`stream_ids.stream_id`).

Then it signs a certificate with the root key and stores it in the policy's destination
(`ledger.certificate.publish_certificate`), and answers 201 with the record. The root key
never leaves the operator; the audited namespace holds no private key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock import sinks
from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.certificate import Subject, publish_certificate
from auditlock.ledger.errors import KeyFileError
from auditlock.ledger.keys import Signer, key_id, public_from_raw
from auditlock.ledger.names import check_stream_id, claim_name
from auditlock.operator.destination import open_options, retention_spec
from auditlock.operator.kube import Kube
from auditlock.operator.names import CERTIFICATE_AUDIENCE, COLLECTOR_CONTAINER
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.stream_ids import stream_id

log = logging.getLogger("auditlock.operator.certificates")

PATH = "/v1/certificates"
CLAIM_FORMAT = "auditlock/claim/v1"
AUDIENCE = CERTIFICATE_AUDIENCE
MAX_REQUEST_BYTES = 4 * 1024
MAX_TOKEN_BYTES = 16 * 1024
# Certificates start this much before they are issued, so a collector whose clock is a
# little behind the operator's can still use its key at once (FORMAT.md section 9).
CLOCK_SKEW_NS = 5 * 60 * 1_000_000_000
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"

# Outcomes, the label of auditlock_operator_certificate_requests_total.
ISSUED = "issued"
OUTCOMES = (
    ISSUED,
    "bad-request",
    "unauthenticated",
    "forbidden",
    "not-running",
    "busy",
    "store-error",
    "error",
)


class Refused(Exception):
    """A request answered without a certificate: HTTP status, outcome label, message."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


@dataclass(frozen=True)
class Issued:
    name: str
    record: bytes
    not_after_ns: int


def parse_request(body: bytes) -> tuple[Ed25519PublicKey, str]:
    """The public key and stream asked for; Refused(400) saying what is wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise Refused(413, "bad-request", f"request body is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(400, "bad-request", "request body is not JSON") from None
    if not isinstance(raw, dict) or set(raw) != {"public_key", "stream"}:
        raise Refused(400, "bad-request", 'expected {"public_key", "stream"} and nothing else')
    if not all(isinstance(raw[k], str) for k in raw):
        raise Refused(400, "bad-request", "public_key and stream must be strings")
    try:
        key = public_from_raw(base64.b64decode(raw["public_key"], validate=True))
        stream = check_stream_id(raw["stream"])
    except (ValueError, binascii.Error, KeyFileError) as exc:
        raise Refused(400, "bad-request", f"malformed request: {exc}") from None
    return key, stream


def bearer_token(header: str) -> str:
    """The token of an `Authorization: Bearer` header; Refused(401) if there is none."""
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Refused(401, "unauthenticated", "send the pod's projected ServiceAccount token")
    if len(token) > MAX_TOKEN_BYTES:
        raise Refused(401, "unauthenticated", "bearer token is too long")
    return token.strip()


@dataclass
class CertificateIssuer:
    root: Signer
    kube: Kube
    registry: PolicyRegistry
    cluster: str
    validity_seconds: float = 24 * 3600
    # At most this many requests are checked at once (each is a TokenReview, a pod read
    # and a store write); up to `max_waiting` more wait, and beyond that the answer is
    # 429, so a crowd of starting pods cannot exhaust the operator or the API server.
    max_in_flight: int = 16
    max_waiting: int = 512
    clock: Callable[[], int] = time.time_ns
    # Opens the policy's destination with its credentials (tests may point elsewhere).
    open_destination: Callable[[PolicyEntry], sinks.Destination] | None = None

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_in_flight)
        # Its own threads: the checks wait on the API server and the store, and must
        # neither starve nor be starved by the operator's other blocking calls.
        self._threads = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="certify")
        self._waiting = 0
        self._root_stored: set[str] = set()  # destination URLs that hold the root's key

    async def issue(self, authorization: str, body: bytes) -> Issued:
        """Check the request and certify its key; Refused says why not."""
        token = bearer_token(authorization)
        public, stream = parse_request(body)
        if self._waiting >= self.max_waiting:
            raise Refused(429, "busy", "too many certificate requests at once; retry shortly")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._issue, token, public, stream)
        finally:
            self._slots.release()

    def _issue(self, token: str, public: Ed25519PublicKey, stream: str) -> Issued:
        review = self.kube.review_token(token, AUDIENCE)
        namespace, account, pod_name, pod_uid = _identity(review)
        pod = self.kube.read_pod(namespace, pod_name)
        meta = (pod or {}).get("metadata") or {}
        if pod is None or meta.get("uid") != pod_uid:
            raise Refused(403, "forbidden", f"pod {namespace}/{pod_name} with that UID is gone")
        if meta.get("deletionTimestamp"):
            raise Refused(403, "forbidden", f"pod {namespace}/{pod_name} is being deleted")
        if ((pod.get("spec") or {}).get("serviceAccountName") or "default") != account:
            raise Refused(403, "forbidden", "the token's ServiceAccount is not the pod's")
        policies = self.registry.selecting(namespace, meta.get("labels") or {})
        if not policies:
            raise Refused(403, "forbidden", f"no AuditPolicy selects pod {namespace}/{pod_name}")
        entry = policies[0]
        expected = stream_id(self.cluster, namespace, pod_name)
        if stream != expected:
            raise Refused(403, "forbidden", f"pod {namespace}/{pod_name} writes stream {expected}")
        container = collector_container_id(pod)
        if container is None:
            # Only a running collector asks; the kubelet reports it within a moment, and
            # the collector retries (a request from anyone else is refused meanwhile).
            raise Refused(
                503,
                "not-running",
                f"the collector of pod {namespace}/{pod_name} is not reported running yet",
            )
        now = self.clock()
        not_after = now + int(self.validity_seconds * 1_000_000_000)
        subject = Subject(self.cluster, namespace, pod_name, pod_uid, stream)
        destination = self._open(entry)
        try:
            _claim(destination, container, pod_uid, key_id(public), retention_spec(entry.spec))
            name, record = publish_certificate(
                destination, self.root, subject, public,
                not_before_ns=now - CLOCK_SKEW_NS, not_after_ns=not_after,
                retention=retention_spec(entry.spec),
                store_issuer_key=entry.spec.destination.url not in self._root_stored,
            )  # fmt: skip
            self._root_stored.add(entry.spec.destination.url)
        except sinks.ObjectConflict:
            raise Refused(
                403,
                "forbidden",
                f"the collector container of pod {namespace}/{pod_name} already has a "
                "certified key; a new key needs a new container (a restart)",
            ) from None
        except (sinks.DestinationError, OSError) as exc:
            raise Refused(503, "store-error", f"could not store the certificate: {exc}") from None
        finally:
            destination.close()
        log.info("certified key for stream %s (pod uid %s): %s", stream, pod_uid, name)
        return Issued(name, record, not_after)

    def _open(self, entry: PolicyEntry) -> sinks.Destination:
        if self.open_destination is not None:
            return self.open_destination(entry)
        dest = entry.spec.destination
        holder = dest.s3 or dest.gcs
        ref = holder.credentials_secret if holder is not None else None
        secret = self.kube.read_secret(entry.namespace, ref.name) if ref is not None else None
        return sinks.open(dest.url, **open_options(entry.spec, secret))


def collector_container_id(pod: dict[str, Any]) -> str | None:
    """The container id the kubelet reports for the pod's collector while it runs; None
    when it is not running (not started yet, restarting, or no kubelet reports it)."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            if not isinstance(container, dict) or container.get("name") != COLLECTOR_CONTAINER:
                continue
            found = container.get("containerID")
            running = (container.get("state") or {}).get("running")
            return found if isinstance(found, str) and found and running else None
    return None


def _claim(
    destination: sinks.Destination,
    container: str,
    pod_uid: str,
    key: str,
    retention: sinks.RetentionSpec,
) -> None:
    """One key per collector container (FORMAT.md section 9, "Claims"): the first key
    certified for a running container instance is written down under a name of that
    instance; another key for it is an ObjectConflict (the store refuses a different
    object under an existing name, so replicas of the operator agree). The same key again
    (a renewal) stores the same bytes. A restart is a new container id, so a new key."""
    body = canonical_bytes(
        {"format": CLAIM_FORMAT, "pod_uid": pod_uid, "container_id": container, "key_id": key}
    )
    digest = hashlib.sha256(container.encode()).hexdigest()[:32]
    destination.put(claim_name(pod_uid, digest), body + b"\n", retention)


def _identity(review: dict[str, Any]) -> tuple[str, str, str, str]:
    """(namespace, ServiceAccount, pod name, pod UID) a reviewed token proves."""
    if not review.get("authenticated"):
        reason = str(review.get("error") or "not authenticated")[:200]
        raise Refused(401, "unauthenticated", f"token refused by the API server: {reason}")
    if AUDIENCE not in (review.get("audiences") or []):
        raise Refused(401, "unauthenticated", f"token is not for audience {AUDIENCE}")
    user = review.get("user") or {}
    username = str(user.get("username") or "")
    namespace, _, account = username.removeprefix(_SA_PREFIX).partition(":")
    if not username.startswith(_SA_PREFIX) or not namespace or not account:
        raise Refused(403, "forbidden", "the token is not a ServiceAccount's")
    extra = user.get("extra") or {}
    names, uids = extra.get(_POD_NAME) or [], extra.get(_POD_UID) or []
    if len(names) != 1 or len(uids) != 1:
        raise Refused(403, "forbidden", "the token is not bound to a pod (use a projected token)")
    return namespace, account, str(names[0]), str(uids[0])
