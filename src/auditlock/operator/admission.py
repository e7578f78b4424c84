"""The mutating (inject) and validating (enforce) webhooks, as pure request -> response.

Every answer is a well-formed `admission.k8s.io/v1` AdmissionReview with HTTP 200: a
request that cannot be parsed is answered with a clear denial when a `required` policy
could be affected (fail closed) and allowed unchanged otherwise (fail open) - never a
500, which the API server would turn into its own, less helpful, failure.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from auditlock.operator import injection, pod_isolation
from auditlock.operator.names import COLLECTOR_CONTAINER
from auditlock.operator.registry import PolicyEntry, PolicyRegistry

API_VERSION = "admission.k8s.io/v1"


class AdmissionStats:
    """Counters exported as metrics: requests by webhook and outcome."""

    def __init__(self, on_count: Callable[[str, str], None] | None = None) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._on_count = on_count

    def count(self, webhook: str, outcome: str) -> None:
        self.counts[(webhook, outcome)] += 1
        if self._on_count is not None:
            self._on_count(webhook, outcome)


def _review(uid: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, **response},
    }


def _deny(uid: str, message: str, code: int = 403) -> dict[str, Any]:
    return _review(
        uid, {"allowed": False, "status": {"code": code, "message": message, "reason": "Forbidden"}}
    )


def _allow(uid: str, warnings: list[str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"allowed": True}
    if warnings:
        response["warnings"] = warnings
    return _review(uid, response)


# The webhook of each hook, as its messages name it.
_WEBHOOKS = {"mutate": "injection", "validate": "enforcement"}


class _BadRequest(Exception):
    def __init__(self, message: str, uid: str = "", namespace: str | None = None) -> None:
        super().__init__(message)
        self.uid = uid
        self.namespace = namespace


def _parse(body: bytes) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """-> (uid, namespace, pod, request). Raises _BadRequest with what was wrong."""
    try:
        review = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"request body is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
        raise _BadRequest("request body is not an AdmissionReview with a request")
    request = review["request"]
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise _BadRequest("AdmissionReview request has no uid")
    namespace = request.get("namespace")
    if not isinstance(namespace, str):
        namespace = None
    kind = request.get("kind") or {}
    if not isinstance(kind, dict) or kind.get("kind") != "Pod":
        raise _BadRequest(f"expected a Pod, got {kind!r}", uid, namespace)
    pod = request.get("object")
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        raise _BadRequest("AdmissionReview request.object is not a Pod", uid, namespace)
    meta = pod.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise _BadRequest("Pod metadata is not an object", uid, namespace)
    if namespace is None:
        namespace = (meta or {}).get("namespace")
        if not isinstance(namespace, str):
            raise _BadRequest("AdmissionReview request has no namespace", uid, None)
    for field in ("labels", "annotations"):
        value = (meta or {}).get(field) or {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _BadRequest(f"Pod {field} are not a map of strings", uid, namespace)
    problem = shape_problem(pod["spec"], _POD_SPEC, "spec")
    if problem is not None:
        raise _BadRequest(f"Pod {problem}", uid, namespace)
    return uid, namespace, pod, request


# The parts of a pod spec the webhooks read, and the JSON type each must have (the API
# server always sends them so; anything else is an unreadable request, answered like
# one, so the checks below never meet a wrong type). A dict is an object with those
# fields, a one-element list a list of that (no nulls), `str` a string; an absent or
# null field is fine.
_CONTAINER: dict[str, Any] = {
    "volumeMounts": [{"name": str, "mountPath": str, "subPath": str}],
    "env": [{"valueFrom": {"secretKeyRef": {}}}],
    "envFrom": [{"secretRef": {}}],
}
_POD_SPEC: dict[str, Any] = {
    "initContainers": [_CONTAINER],
    "containers": [_CONTAINER],
    "ephemeralContainers": [_CONTAINER],
    "volumes": [{"name": str, "secret": {}, "projected": {"sources": [{"secret": {}}]}}],
}


def shape_problem(value: Any, shape: Any, where: str) -> str | None:
    """Where `value` does not have `shape` (see _POD_SPEC), or None."""
    if value is None:
        return None
    if shape is str:
        return None if isinstance(value, str) else f"{where} is not a string"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        for i, item in enumerate(value):
            if item is None:
                return f"{where}[{i}] is null"
            found = shape_problem(item, shape[0], f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if not isinstance(value, dict):
        return f"{where} is not an object"
    for key, inner in shape.items():
        found = shape_problem(value.get(key), inner, f"{where}.{key}")
        if found is not None:
            return found
    return None


def _bad_request_answer(
    webhook: str, exc: _BadRequest, registry: PolicyRegistry
) -> tuple[dict[str, Any], str]:
    """Fail closed when a required policy could be affected, open otherwise."""
    if exc.namespace is not None:
        required = [p for p in registry.in_namespace(exc.namespace) if p.required]
    else:
        required = [
            p for ns in registry.namespaces() for p in registry.in_namespace(ns) if p.required
        ]
    if required:
        names = ", ".join(f"{p.namespace}/{p.name}" for p in required[:3])
        message = (
            f"auditlock {webhook} webhook could not read the request: {exc}; refusing it "
            f"because AuditPolicy {names} has enforcement: required"
        )
        return _deny(exc.uid, message, code=400), "denied-unparseable"
    return _allow(exc.uid, [f"auditlock {webhook} webhook ignored a request: {exc}"]), (
        "allowed-unparseable"
    )


def pod_name(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("name") or (str(meta.get("generateName") or "") + "<generated>"))


def _is_update(request: dict[str, Any]) -> bool:
    """UPDATE of pods/ephemeralcontainers (`kubectl debug`) or of a pod's images: nothing
    to inject, only to check. The webhooks never patch an UPDATE."""
    return request.get("operation") == "UPDATE"


def _collector_swapped(request: dict[str, Any], pod: dict[str, Any]) -> str | None:
    """A refusal when an UPDATE changes the collector's image (`kubectl set image`)."""
    if not _is_update(request):
        return None
    old = request.get("oldObject")
    if not isinstance(old, dict) or not isinstance(old.get("spec"), dict):
        return None
    before = injection.find_collector(old)
    if before is None:
        return None
    after = injection.find_collector(pod)
    image = after[1].get("image") if after is not None else None
    if image == before[1].get("image"):
        return None
    return (
        f"the image of {COLLECTOR_CONTAINER} cannot change in a running pod "
        f"({str(before[1].get('image'))[:200]!r} -> {str(image)[:200]!r}); re-create the "
        "pod to get the collector the operator injects now"
    )


def _injecting_policy(policies: list[PolicyEntry]) -> PolicyEntry:
    """The policy whose collector a pod gets: the oldest `required` one, else the oldest
    (so the validating webhook is satisfied by what the mutating one did)."""
    required = [p for p in policies if p.required]
    return required[0] if required else policies[0]


def _refuse(uid: str, namespace: str, pod: dict[str, Any], refusals: list[str]) -> dict[str, Any]:
    shown = "; ".join(refusals[:5]) + (
        f"; and {len(refusals) - 5} more" if len(refusals) > 5 else ""
    )
    return _deny(uid, f"auditlock refuses pod {namespace}/{pod_name(pod)}: {shown}")


def mutate(
    body: bytes,
    registry: PolicyRegistry,
    settings: injection.InjectionSettings,
    stats: AdmissionStats | None = None,
) -> dict[str, Any]:
    """Answer a Pod CREATE: inject the collector of the policy selecting the pod, and
    refuse what would reach a collector's key, spool or processes (pod_isolation); an
    UPDATE (ephemeral containers) is only checked."""
    stats = stats or AdmissionStats()
    try:
        uid, namespace, pod, request = _parse(body)
    except _BadRequest as exc:
        answer, outcome = _bad_request_answer(_WEBHOOKS["mutate"], exc, registry)
        stats.count("mutate", outcome)
        return answer
    in_namespace = registry.in_namespace(namespace)
    if not in_namespace:
        stats.count("mutate", "not-selected")
        return _allow(uid)
    patch: injection.JsonPatch = []
    policies: list[PolicyEntry] = []
    if not _is_update(request):
        labels = (pod.get("metadata") or {}).get("labels") or {}
        policies = registry.selecting(namespace, labels)
    if not policies:
        outcome = "not-selected"
    elif injection.opted_out(pod) and not any(p.required for p in policies):
        outcome = "opted-out"
    else:
        # enforcement: required wins over the opt-out annotation.
        entry = _injecting_policy(policies)
        patch = injection.injection_patch(pod, entry, settings)
        outcome = "injected" if patch else "already-injected"
    if outcome in ("injected", "already-injected"):
        # The pod as admitted carries `entry`'s collector, by construction.
        admitted = injection.patched_view(pod, patch)
        findings = pod_isolation.check_with(admitted, in_namespace, entry)
    else:
        findings = pod_isolation.check(pod, in_namespace, settings)
    warning = _isolation(namespace, pod, request, findings)
    if findings.refusals:
        stats.count("mutate", "denied-isolation")
        return _refuse(uid, namespace, pod, findings.refusals)
    stats.count("mutate", outcome)
    answer = _allow(uid, [warning] if warning else [])
    if patch:
        answer["response"]["patchType"] = "JSONPatch"
        answer["response"]["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return answer


def validate(
    body: bytes,
    registry: PolicyRegistry,
    settings: injection.InjectionSettings,
    stats: AdmissionStats | None = None,
) -> dict[str, Any]:
    """Refuse a pod selected by a `required` policy that does not carry exactly the
    collector the operator injects, and anything that reaches a collector's key, spool
    or processes (pod_isolation); an UPDATE (ephemeral containers) is only the latter."""
    stats = stats or AdmissionStats()
    try:
        uid, namespace, pod, request = _parse(body)
    except _BadRequest as exc:
        answer, outcome = _bad_request_answer(_WEBHOOKS["validate"], exc, registry)
        stats.count("validate", outcome)
        return answer
    in_namespace = registry.in_namespace(namespace)
    genuine: PolicyEntry | None = None
    if not _is_update(request):
        labels = (pod.get("metadata") or {}).get("labels") or {}
        policies = registry.selecting(namespace, labels)
        if any(p.required for p in policies):
            policy = _injecting_policy(policies)
            difference = injection.injected_difference(pod, policy, settings)
            if difference is not None:
                stats.count("validate", "denied")
                return _deny(uid, _not_injected_message(namespace, pod, policy, difference))
            genuine = policy
    if genuine is not None:
        findings = pod_isolation.check_with(pod, in_namespace, genuine)
    else:
        findings = pod_isolation.check(pod, in_namespace, settings)
    _isolation(namespace, pod, request, findings)  # its warning is the mutating webhook's
    if findings.refusals:
        stats.count("validate", "denied-isolation")
        return _refuse(uid, namespace, pod, findings.refusals)
    stats.count("validate", "allowed")
    return _allow(uid)


def _isolation(
    namespace: str, pod: dict[str, Any], request: dict[str, Any], findings: pod_isolation.Findings
) -> str | None:
    """Add to `findings.refusals` a swapped collector (first: the cause; the mounts it flags
    follow) and a volume shared with the collector of a `required` policy; return the
    warning for one shared with the collector of a policy that is not."""
    swapped = _collector_swapped(request, pod)
    if swapped is not None:
        findings.refusals.insert(0, swapped)
    if findings.shared_with is None:
        return None
    message = pod_isolation.shared_message(f"{namespace}/{pod_name(pod)}", findings)
    if not findings.shared_with.required:
        return message
    findings.refusals.append(message + " (enforcement: required)")
    return None


def _not_injected_message(
    namespace: str, pod: dict[str, Any], policy: PolicyEntry, difference: str
) -> str:
    head = (
        f"pod {namespace}/{pod_name(pod)} is selected by AuditPolicy {policy.name} "
        "(enforcement: required) but "
    )
    if injection.find_collector(pod) is None:
        head += f"has no {COLLECTOR_CONTAINER} container"
    else:
        head += f"its {COLLECTOR_CONTAINER} is not the one the operator injects ({difference})"
    return (
        head + "; the injection webhook did not run or the pod was changed after it - check "
        "the auditlock operator and the MutatingWebhookConfiguration"
    )


def internal_error_answer(webhook: str, body: bytes, registry: PolicyRegistry) -> dict[str, Any]:
    """The answer when a handler itself failed: like an unparseable request."""
    uid, namespace = "", None
    try:
        review = orjson.loads(body)
        request = review.get("request") if isinstance(review, dict) else None
        if isinstance(request, dict):
            uid = str(request.get("uid") or "")
            found = request.get("namespace")
            namespace = found if isinstance(found, str) else None
    except ValueError:  # orjson.JSONDecodeError, also for nesting deeper than 1024
        pass
    error = _BadRequest("internal error while handling it (see operator log)", uid, namespace)
    return _bad_request_answer(_WEBHOOKS[webhook], error, registry)[0]
