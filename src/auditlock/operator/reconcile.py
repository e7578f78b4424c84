"""Bring one AuditPolicy to its desired state and report it honestly in status.

Steps, each of which can fail with a one-sentence reason in status:
validate the spec -> signing-key Secret (create if absent) -> credentials Secret exists ->
collector ConfigMap (render, create/update) -> destination (lock check, publish the
public key, newest checkpoint) -> pod counts -> status.

Transient failures raise `RetryLater` after status is written; the kopf handler turns it
into a retry with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from auditlock.ledger.newest import StreamTip
from auditlock.operator import conditions as c
from auditlock.operator import keys
from auditlock.operator import names as n
from auditlock.operator.abandonment import AbandonWatch, close_abandoned
from auditlock.operator.destination import (
    SCAN_INTERVAL,
    DestinationState,
    inspect,
    open_options,
    retention_spec,
)
from auditlock.operator.kube import Kube
from auditlock.operator.pod_status import (
    POD_CONDITIONS,
    count_pods,
    injecting_condition,
    pod_conditions,
    unchanged,
)
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.sidecar_config import config_map_data
from auditlock.operator.status_metrics import PolicyStatusMetrics
from auditlock.operator.stream_ids import pod_of_stream
from auditlock.policy.model import API_VERSION, KIND, AuditPolicySpec, parse_spec
from auditlock.sinks import DestinationError

log = logging.getLogger("auditlock.operator.reconcile")

DESTINATION_TIMEOUT = 30.0
# How long a reconcile waits for the policy watch to see the object it reconciles (the
# watch and kopf read the same API server, so this is normally a few milliseconds).
REGISTRY_WAIT = 30.0
REGISTRY_POLL = 0.02


class RetryLater(Exception):
    """A transient problem; status already says what. Retry with backoff."""


class InvalidPolicy(Exception):
    """The spec is invalid; status says why. Retrying will not help until it changes."""


EventSink = Callable[[dict[str, Any], str, str, str], None]  # (body, type, reason, message)


@dataclass(frozen=True)
class Context:
    kube: Kube
    registry: PolicyRegistry
    cluster: str = ""
    # Posts a Kubernetes Event about the policy; kopf's poster in the operator.
    events: EventSink | None = None
    # Counts reconcile outcomes by Ready reason (a metric in the operator).
    outcomes: Callable[[str], None] | None = None
    # How old a "newest checkpoint" answer the periodic refresh may reuse (it lists the
    # destination's streams/, which is costly for a big bucket).
    checkpoint_scan_seconds: float = SCAN_INTERVAL
    # Closes the streams of pods that are gone for good; None: never.
    abandon: AbandonWatch | None = None
    # Whether the periodic refresh closes them. False when the witness does, in its own
    # cycle off its own reading (`close_abandoned_in`), so one replica decides, on the
    # newest reading, and the record it stores next names each closed stream.
    abandon_in_refresh: bool = True
    # Counts abandonment attempts by outcome (a metric in the operator).
    abandon_outcomes: Callable[[str], None] | None = None
    # Exports each policy's status as gauges (pods without a collector, conditions).
    status_metrics: PolicyStatusMetrics | None = None
    # The root key certifying per-pod keys (operator/certificates.py); it also closes
    # their abandoned streams. None: this operator certifies none, and `signing: perPod`
    # policies cannot run.
    root_key: keys.SigningKeyMaterial | None = field(default=None, repr=False)


def _meta(body: dict[str, Any]) -> tuple[str, str, str, int, str]:
    meta = body["metadata"]
    return (
        meta["namespace"],
        meta["name"],
        meta.get("uid", ""),
        int(meta.get("generation") or 0),
        meta.get("creationTimestamp") or "",
    )


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    message = str(first["msg"]).removeprefix("Value error, ")  # pydantic's, not ours
    return f"{where}: {message}{more}."


def entry_for(body: dict[str, Any], cluster: str = "") -> PolicyEntry:
    """The registry entry for a policy object; raises ValidationError for a bad spec."""
    namespace, name, uid, generation, created = _meta(body)
    spec = parse_spec(body.get("spec") or {})
    data, digest = config_map_data(spec, cluster=cluster)
    return PolicyEntry(namespace, name, uid, generation, spec, digest, created, data[n.CONFIG_FILE])


def owned_meta(body: dict[str, Any]) -> dict[str, Any]:
    _, name, uid, _, _ = _meta(body)
    return {
        "labels": {n.LABEL_MANAGED_BY: n.MANAGED_BY, n.LABEL_OWNER_POLICY: name},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


async def _status(
    ctx: Context, body: dict[str, Any], new_conditions: list[dict[str, Any]], **fields: Any
) -> None:
    namespace, name, _, generation, _ = _meta(body)
    previous = (body.get("status") or {}).get("conditions")
    status = {"observedGeneration": generation, **fields}
    # TrailVerified is continuous verification's (status.verification), kept as it says.
    new_conditions = c.with_trail_verified(body.get("status"), new_conditions, generation)
    status["conditions"] = c.merge(previous, new_conditions)
    await asyncio.to_thread(ctx.kube.patch_policy_status, namespace, name, status)
    if ctx.status_metrics is not None:
        ctx.status_metrics.observe(namespace, name, status)
    _announce(ctx, body, previous, new_conditions)


def _announce(
    ctx: Context,
    body: dict[str, Any],
    previous: list[dict[str, Any]] | None,
    new_conditions: list[dict[str, Any]],
) -> None:
    """One Event when Ready changes (status or reason): what `kubectl describe` shows."""
    before = next((x for x in previous or [] if x.get("type") == c.READY), {})
    now = next((x for x in new_conditions if x.get("type") == c.READY), None)
    if now is None:
        return
    if ctx.outcomes is not None:
        ctx.outcomes(str(now["reason"]))
    if ctx.events is None:
        return
    if (before.get("status"), before.get("reason")) == (now["status"], now["reason"]):
        return
    kind = "Normal" if now["status"] == "True" else "Warning"
    ctx.events(body, kind, now["reason"], now["message"])


async def reconcile(ctx: Context, body: dict[str, Any]) -> None:
    namespace, name, _, generation, _ = _meta(body)
    try:
        entry = entry_for(body, ctx.cluster)
    except ValidationError as exc:
        message = validation_message(exc)
        # Auditing is not switched off by a bad edit: the webhooks keep serving the last
        # valid generation (the policy watch keeps it) until the spec is fixed.
        last = ctx.registry.get(namespace, name)
        serving = last.generation if last is not None else None
        await _status(
            ctx,
            body,
            [
                c.condition(c.READY, False, "InvalidSpec", message, generation),
                c.condition(c.DESTINATION_LOCKED, None, "InvalidSpec", message, generation),
                injecting_condition(generation, invalid=message, serving=serving),
            ],
        )
        raise InvalidPolicy(message) from None
    spec = entry.spec
    await _registry_caught_up(
        lambda: ctx.registry.holds(namespace, name, entry.uid, generation),
        f"generation {generation} of {namespace}/{name}",
    )
    summary: dict[str, Any] = {
        "destination": spec.destination.url,
        "retention": _retention_text(spec),
    }

    async def fail(reason: str, message: str, *, lock: bool | None = None) -> None:
        await _status(
            ctx,
            body,
            [
                c.condition(c.READY, False, reason, message, generation),
                c.condition(c.DESTINATION_LOCKED, lock, reason, message, generation),
                injecting_condition(generation),
            ],
            **summary,
        )

    try:
        await _converge(ctx, body, entry, summary, fail)
    except ApiException as exc:
        # RBAC gaps, quota, admission refusals of our own objects: say which call failed.
        message = (
            f"The Kubernetes API refused a call of the operator: {exc.status} {exc.reason}"
            f"{': ' + _api_message(exc) if _api_message(exc) else ''}."
        )
        await fail("KubernetesApiError", message)
        raise RetryLater(message) from None


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return ""


async def _converge(
    ctx: Context,
    body: dict[str, Any],
    entry: PolicyEntry,
    summary: dict[str, Any],
    fail: Callable[..., Awaitable[None]],
) -> None:
    namespace, name, _, generation, _ = _meta(body)
    spec = entry.spec
    # 0. Namespaces with a required policy are the ones the fail-closed webhook selects.
    await mark_enforced_namespace(ctx, namespace)
    # 1. The signing key: created once, never rotated silently, never logged. With
    # per-pod keys there is none here: the root key, in the operator's namespace,
    # certifies each collector's own (and is what verifies the trail).
    secret_name = n.key_secret_name(name)
    material: keys.SigningKeyMaterial | None = None
    if spec.signing == "perPod":
        if ctx.root_key is None:
            message = (
                "signing: perPod needs the operator's root key (chart value "
                "certificates.rootKeySecret); no collector key can be certified."
            )
            await fail("NoRootKey", message)
            raise RetryLater(message)
        published = (ctx.root_key.key_id, ctx.root_key.public_pem)
    else:
        try:
            material = await asyncio.to_thread(_ensure_key, ctx, body, namespace, secret_name)
        except keys.KeySecretError as exc:
            await fail("SigningKeyInvalid", f"{exc}; delete it to have a new key generated.")
            raise RetryLater(str(exc)) from None
        published = (material.key_id, material.public_pem)
        summary["keySecret"] = secret_name
    summary["keyFingerprint"] = published[0]
    summary["publicKey"] = published[1].decode()

    # 2. Credentials the destination needs.
    credentials = _credentials_secret(spec)
    secret_data: dict[str, str] | None = None
    if credentials is not None:
        secret_data = await asyncio.to_thread(ctx.kube.read_secret, namespace, credentials)
        if secret_data is None:
            message = (
                f"Secret {credentials} named in spec.destination does not exist in "
                f"namespace {namespace}."
            )
            await fail("CredentialsSecretMissing", message)
            raise RetryLater(message)

    # 2b. Key rotation, when the policy asks for it with a new annotation value.
    requested = (body["metadata"].get("annotations") or {}).get(n.ANNOTATION_ROTATE_KEY)
    if requested and material is not None:
        done = await asyncio.to_thread(
            ctx.kube.secret_annotation, namespace, secret_name, n.ANNOTATION_ROTATED_FOR
        )
        if done != requested:
            try:
                material = await asyncio.to_thread(
                    _rotate, ctx, spec, secret_data, namespace, secret_name, material, requested
                )
            except (DestinationError, OSError) as exc:
                message = (
                    f"The signing key was not rotated: the rotation record could not be "
                    f"stored in {spec.destination.url} ({exc})."
                )
                await fail("KeyRotationFailed", message)
                raise RetryLater(message) from None
            summary["keyFingerprint"] = material.key_id
            summary["publicKey"] = material.public_pem.decode()
            published = (material.key_id, material.public_pem)

    # 3. The collector configuration.
    digest = entry.config_hash
    config_map = n.config_map_name(name)
    data = {n.CONFIG_FILE: entry.config_text}
    await asyncio.to_thread(
        ctx.kube.apply_config_map, namespace, config_map, data, owned_meta(body)
    )
    summary["configMap"] = config_map
    summary["configHash"] = digest

    # 4. The destination: lock check, public key beside the data, newest checkpoint.
    state = await inspect_destination(
        spec,
        secret_data,
        published,
        mine=_streams_of(ctx.cluster, namespace),
    )

    # 5. Pods.
    counts = await count_pods(ctx.kube, entry, digest)
    summary.update(counts.fields)
    if state.last_checkpoint:
        summary["lastCheckpoint"] = state.last_checkpoint

    ready_reason = "PolicyInForce" if state.ok else state.reason
    ready_message = (
        f"Collector configuration {digest} is served to selected pods and the "
        f"destination accepts writes{'' if state.worm else ' (not WORM)'}."
        if state.ok
        else state.message
    )
    await _status(
        ctx,
        body,
        [
            c.condition(c.READY, state.ok, ready_reason, ready_message, generation),
            c.condition(c.DESTINATION_LOCKED, state.worm, state.reason, state.message, generation),
            *pod_conditions(counts, generation),
        ],
        **summary,
    )
    if not state.reachable:
        raise RetryLater(state.message)


async def recount(ctx: Context, namespace: str, name: str) -> None:
    """Pods of a policy changed: update podsInjected/podsStale (the PODS column) now
    rather than at the next periodic refresh."""
    entry = ctx.registry.get(namespace, name)
    body = await asyncio.to_thread(ctx.kube.get_policy, namespace, name)
    if entry is None or body is None:
        return
    status = body.get("status") or {}
    if status.get("observedGeneration") != _meta(body)[3]:
        return  # a reconcile is due and will count
    counts = await count_pods(ctx.kube, entry, entry.config_hash)
    generation = _meta(body)[3]
    if unchanged(status, counts, generation):
        return
    conditions = [x for x in status.get("conditions") or [] if x.get("type") not in POD_CONDITIONS]
    conditions += pod_conditions(counts, generation)
    await _status(ctx, body, conditions, **counts.fields)


async def refresh(ctx: Context, body: dict[str, Any]) -> None:
    """The periodic look: pod counts and newest checkpoint, without touching the key or
    the ConfigMap. Re-runs the full reconcile when the last one did not succeed."""
    status = body.get("status") or {}
    ready: dict[str, Any] = next(
        (x for x in status.get("conditions") or [] if x.get("type") == c.READY), {}
    )
    if ready.get("status") != "True" or status.get("observedGeneration") != _meta(body)[3]:
        await reconcile(ctx, body)
        return
    namespace, name, _, generation, _ = _meta(body)
    entry = ctx.registry.get(namespace, name)
    if entry is None:
        return
    counts = await count_pods(ctx.kube, entry, entry.config_hash)
    fields: dict[str, Any] = counts.fields
    state = await inspect_destination(
        entry.spec,
        await _secret_data(ctx, entry),
        None,
        max_age=ctx.checkpoint_scan_seconds,
        mine=_streams_of(ctx.cluster, namespace),
    )
    if state.last_checkpoint:
        fields["lastCheckpoint"] = state.last_checkpoint
    conditions = [x for x in status.get("conditions") or [] if x.get("type") not in POD_CONDITIONS]
    conditions += pod_conditions(counts, generation)
    await _status(ctx, body, conditions, **fields)
    if ctx.abandon is not None and ctx.abandon_in_refresh and state.tips is not None:
        # Status is already written; a failure here is looked at again next time.
        await _logged(ctx, entry, _close_abandoned(ctx, entry, body, state.tips))


async def close_abandoned_in(ctx: Context, url: str, tips: dict[str, StreamTip]) -> list[str]:
    """The witness's part of a cycle (operator/witness.py): close the streams of pods gone
    for good, of every policy whose destination is `url`, off the witness's reading
    `tips` of it; returns the streams closed (their newest checkpoint is now the
    `abandon` one, so the record of this cycle names it)."""
    if ctx.abandon is None:
        return []
    closed = []
    for namespace in sorted(ctx.registry.namespaces()):
        for entry in sorted(ctx.registry.in_namespace(namespace), key=lambda e: e.name):
            if entry.spec.destination.url != url:
                continue
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"namespace": entry.namespace, "name": entry.name, "uid": entry.uid},
            }
            closed += await _logged(ctx, entry, _close_abandoned(ctx, entry, body, tips))
    return closed


async def _logged(ctx: Context, entry: PolicyEntry, closing: Awaitable[list[str]]) -> list[str]:
    """The streams `closing` closed; a Kubernetes or key error is logged and counted
    instead (they are looked at again next time)."""
    try:
        return await closing
    except (ApiException, keys.KeySecretError) as exc:
        log.warning("abandoned streams of %s/%s not looked at: %s", entry.namespace,
                    entry.name, exc)  # fmt: skip
        if ctx.abandon_outcomes is not None:
            ctx.abandon_outcomes("kube-error")
        return []


async def _close_abandoned(
    ctx: Context, entry: PolicyEntry, body: dict[str, Any], tips: dict[str, StreamTip]
) -> list[str]:
    """Close the streams of this policy's namespace whose pods are gone for good; returns
    those closed."""
    watch = ctx.abandon
    if watch is None:
        return []
    if not any(pod_of_stream(ctx.cluster, entry.namespace, stream) for stream in tips):
        return []  # no stream of this namespace: no need to list its pods
    pods = await asyncio.to_thread(ctx.kube.pods_by_name, entry.namespace)
    due = watch.due(entry.spec.destination.url, ctx.cluster, entry.namespace, tips, pods)
    for rollback in watch.rollbacks():
        epoch, index = rollback.seen
        message = (
            f"Stream {rollback.tip.stream}: its newest checkpoint is {rollback.tip.name}, but "
            f"the operator saw checkpoint {index} of epoch {epoch} before: the tail was "
            "deleted; the stream is not closed as abandoned."
        )
        log.warning("%s", message)
        if ctx.abandon_outcomes is not None:
            ctx.abandon_outcomes("rolled-back")
        if ctx.events is not None:
            ctx.events(body, "Warning", "StreamRolledBack", message)
    if not due:
        return []
    if entry.spec.signing == "perPod":
        if ctx.root_key is None:
            return []
        material = ctx.root_key  # the root that certified the streams' keys closes them
    else:
        secret = n.key_secret_name(entry.name)
        material = keys.from_secret_data(
            await asyncio.to_thread(ctx.kube.read_secret, entry.namespace, secret), secret
        )

    def report(stream: str, outcome: str, message: str) -> None:
        if ctx.abandon_outcomes is not None:
            ctx.abandon_outcomes(outcome)
        level = logging.INFO if outcome == "abandoned" else logging.WARNING
        log.log(level, "stream %s: %s: %s", stream, outcome, message)
        if ctx.events is not None and outcome in ("abandoned", "unusable", "foreign-key"):
            kind, reason = (
                ("Normal", "StreamAbandoned")
                if outcome == "abandoned"
                else ("Warning", "StreamNotAbandoned")
            )
            ctx.events(body, kind, reason, f"Stream {stream}: {message}.")

    return await close_abandoned(
        watch,
        spec=entry.spec,
        due=due,
        secret_data=await _secret_data(ctx, entry),
        material=material,
        report=report,
    )


async def _secret_data(ctx: Context, entry: PolicyEntry) -> dict[str, str] | None:
    name = _credentials_secret(entry.spec)
    if name is None:
        return None
    return await asyncio.to_thread(ctx.kube.read_secret, entry.namespace, name)


def _streams_of(cluster: str, namespace: str) -> Callable[[str], bool]:
    """The policy's own streams: those of its namespace in this cluster. Another
    cluster's or namespace's streams in a shared prefix say nothing about this policy."""
    return lambda stream: pod_of_stream(cluster, namespace, stream) is not None


async def inspect_destination(
    spec: AuditPolicySpec,
    secret_data: dict[str, str] | None,
    public_key: tuple[str, bytes] | None,
    *,
    max_age: float = 0.0,
    mine: Callable[[str], bool],
) -> DestinationState:
    options = open_options(spec, secret_data)
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(inspect, spec, options, public_key, max_age, mine),
            DESTINATION_TIMEOUT,
        )
    except TimeoutError:
        url = spec.destination.url
        return DestinationState(
            url,
            False,
            False,
            False,
            "DestinationUnreachable",
            f"{url} did not answer within {DESTINATION_TIMEOUT:.0f} s.",
        )


def _ensure_key(
    ctx: Context, body: dict[str, Any], namespace: str, secret_name: str
) -> keys.SigningKeyMaterial:
    data = ctx.kube.read_secret(namespace, secret_name)
    if data is not None:
        return keys.from_secret_data(data, secret_name)
    material = keys.generate()
    if ctx.kube.create_secret(namespace, secret_name, material.secret_data(), owned_meta(body)):
        log.info("created signing key Secret %s/%s (key id %s)", namespace, secret_name,
                 material.key_id)  # fmt: skip
        return material
    # Someone else created it between our read and create: use theirs.
    return keys.from_secret_data(ctx.kube.read_secret(namespace, secret_name), secret_name)


def _rotate(
    ctx: Context,
    spec: AuditPolicySpec,
    secret_data: dict[str, str] | None,
    namespace: str,
    secret_name: str,
    old: keys.SigningKeyMaterial,
    requested: str,
) -> keys.SigningKeyMaterial:
    """New key; the rotation record (signed by the old key) is stored beside the data
    before the Secret changes, so no event is ever signed by a key nobody vouched for."""
    from auditlock import sinks
    from auditlock.ledger import load_private_key, load_public_key
    from auditlock.ledger.keys import Signer
    from auditlock.ledger.rotation import publish_rotation

    new = keys.generate()
    destination = sinks.open(spec.destination.url, **open_options(spec, secret_data))
    try:
        publish_rotation(
            destination,
            Signer(load_private_key(old.private_pem)),
            load_public_key(new.public_pem),
            retention=retention_spec(spec),
            time_ns=time.time_ns(),
        )
    finally:
        destination.close()
    ctx.kube.replace_secret_data(
        namespace, secret_name, new.secret_data(), {n.ANNOTATION_ROTATED_FOR: requested}
    )
    log.info("rotated the signing key of %s/%s: %s -> %s", namespace, secret_name,
             old.key_id, new.key_id)  # fmt: skip
    return new


def _credentials_secret(spec: AuditPolicySpec) -> str | None:
    dest = spec.destination
    ref = (
        dest.s3.credentials_secret if dest.s3 else dest.gcs.credentials_secret if dest.gcs else None
    )
    return ref.name if ref is not None else None


def _retention_text(spec: AuditPolicySpec) -> str:
    return f"{spec.retention.days}d {spec.retention.mode}"


async def _registry_caught_up(done: Callable[[], bool], what: str) -> None:
    """Wait until the policy watch, the registry's one writer, has seen `what`: the
    webhooks and the namespace's enforcement label then follow the same generation that
    this reconcile writes into status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REGISTRY_WAIT
    while not done():
        if loop.time() > deadline:
            raise RetryLater(f"The operator's policy watch has not seen {what} yet.")
        await asyncio.sleep(REGISTRY_POLL)


async def mark_enforced_namespace(ctx: Context, namespace: str) -> None:
    """Label the namespace while any of its policies says `enforcement: required`; the
    fail-closed validating webhook selects only labelled namespaces."""
    required = any(p.required for p in ctx.registry.in_namespace(namespace))
    await asyncio.to_thread(
        ctx.kube.label_namespace,
        namespace,
        n.LABEL_ENFORCED_NAMESPACE,
        n.ENFORCED if required else None,
    )


async def cleanup(ctx: Context, body: dict[str, Any]) -> None:
    """On delete: remove what the operator created in the cluster. The ledger, its keys
    and the public key in the destination stay untouched (they are under retention)."""
    namespace, name, uid, _, _ = _meta(body)
    await _registry_caught_up(
        lambda: ctx.registry.holds_none(namespace, name, uid),
        f"the deletion of {namespace}/{name}",
    )
    if ctx.status_metrics is not None:
        ctx.status_metrics.forget(namespace, name)
    await mark_enforced_namespace(ctx, namespace)
    await asyncio.to_thread(ctx.kube.delete, "ConfigMap", namespace, n.config_map_name(name))
    await asyncio.to_thread(ctx.kube.delete, "Secret", namespace, n.key_secret_name(name))
