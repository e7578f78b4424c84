"""Map Kubernetes API server audit events and watched object changes to ledger events.

Pure functions (unit-tested) used by `capture.py`. The ledger event model is
auditlock.ledger.event.AuditEvent: id, time, category, action, outcome, actor, target,
correlation, details; the operator's collector fills `source` with its own identity, so
where the event was observed (the API server's audit webhook or a watch) is recorded in
`details.observed_by`. Secret values never leave the cluster: for Secrets the watch
fallback records key names and a SHA-256 per value, and the audit policy must log
Secrets at Metadata level.
"""

from __future__ import annotations

import hashlib
from typing import Any

LONG_RUNNING = frozenset({"exec", "attach", "portforward", "proxy"})
RBAC = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
READ_VERBS = frozenset({"get", "list", "watch"})


def _object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else {}: the audit intake reads what the API
    server sends, but a token holder can send anything, and a wrong type must be out of
    scope or a missing field, never an exception."""
    return value if isinstance(value, dict) else {}


def _actor(user: dict[str, Any], source_ips: Any) -> dict[str, Any]:
    name = str(user.get("username") or "")
    if name == "system:anonymous" or not name:
        kind = "anonymous"
        name = name or "system:anonymous"
    elif name.startswith("system:serviceaccount:"):
        kind = "serviceaccount"
    elif name.startswith("system:"):
        kind = "system"
    else:
        kind = "user"
    actor: dict[str, Any] = {"kind": kind, "name": name}
    if isinstance(source_ips, list) and source_ips:
        actor["ip"] = str(source_ips[0])[:64]
    return actor


def category_for(resource: str, subresource: str, verb: str) -> str | None:
    """The SOC 2 category of an API request, or None when it is not captured."""
    if resource == "pods" and subresource in LONG_RUNNING:
        return "access"
    if resource in RBAC:
        return None if verb in READ_VERBS else "authorization"
    if resource == "secrets":
        return "access" if verb in READ_VERBS else "data"
    if resource == "configmaps":
        return None if verb in READ_VERBS else "configuration"
    return None


def from_audit_event(event: dict[str, Any], namespaces: set[str]) -> dict[str, Any] | None:
    """A ledger event for one `audit.k8s.io/v1` Event, or None when it is out of scope
    (other namespace, not a captured kind of request, or not the final stage)."""
    if event.get("stage") not in ("ResponseComplete", "Panic"):
        return None
    ref = event.get("objectRef")
    if not isinstance(ref, dict):
        return None
    namespace = ref.get("namespace")
    if not isinstance(namespace, str) or namespace not in namespaces:
        return None
    resource = str(ref.get("resource") or "")
    subresource = str(ref.get("subresource") or "")
    verb = str(event.get("verb") or "")
    category = category_for(resource, subresource, verb)
    if category is None:
        return None
    audit_id = str(event.get("auditID") or "")
    code = _object(event.get("responseStatus")).get("code")
    outcome = ("success" if code < 400 else "failure") if isinstance(code, int) else "unknown"
    action = subresource if subresource in LONG_RUNNING else verb
    target: dict[str, Any] = {"resource": resource, "namespace": namespace}
    if ref.get("name"):
        target["name"] = str(ref["name"])
    if subresource:
        target["resource"] = f"{resource}/{subresource}"
    details: dict[str, Any] = {
        "observed_by": "kube-apiserver-audit",
        "verb": verb,
        "stage": event.get("stage"),
        "request_uri": str(event.get("requestURI") or "")[:1024],
    }
    if isinstance(code, int):
        details["status_code"] = code
    if event.get("userAgent"):
        details["user_agent"] = str(event["userAgent"])[:512]
    groups = _object(event.get("user")).get("groups")
    if isinstance(groups, list):
        details["groups"] = [str(g) for g in groups][:32]
    if ref.get("apiGroup"):
        details["api_group"] = str(ref["apiGroup"])
    result: dict[str, Any] = {
        "time": str(event.get("requestReceivedTimestamp") or event.get("stageTimestamp")),
        "category": category,
        "action": action,
        "outcome": outcome,
        "actor": _actor(_object(event.get("user")), event.get("sourceIPs")),
        "target": target,
        "details": details,
    }
    if audit_id:
        result["id"] = f"k8s-audit-{audit_id}"
        result["correlation"] = {"request_id": audit_id}
    return result


def _fingerprints(data: dict[str, Any] | None) -> dict[str, str]:
    """Key -> SHA-256 of the value (Secrets and ConfigMaps): what changed, never the value."""
    return {
        str(k): hashlib.sha256(str(v).encode()).hexdigest() for k, v in sorted((data or {}).items())
    }


WATCHED = {
    # kind -> (resource, category)
    "ConfigMap": ("configmaps", "configuration"),
    "Secret": ("secrets", "data"),
    "Role": ("roles", "authorization"),
    "RoleBinding": ("rolebindings", "authorization"),
}


def from_watch_event(
    kind: str, event_type: str, body: dict[str, Any], now: str
) -> dict[str, Any] | None:
    """A ledger event for one watch event of a watched kind (the fallback for clusters
    whose API server audit cannot be configured). The watch does not say who made the
    change; `actor` is recorded as unknown (system) and the managedFields manager, when
    present, goes into details."""
    if kind not in WATCHED or event_type not in ("ADDED", "MODIFIED", "DELETED"):
        return None
    resource, category = WATCHED[kind]
    meta = body.get("metadata") or {}
    action = {"ADDED": "create", "MODIFIED": "update", "DELETED": "delete"}[event_type]
    details: dict[str, Any] = {
        "observed_by": "watch",
        "resource_version": str(meta.get("resourceVersion") or ""),
    }
    managers = [str(m.get("manager")) for m in meta.get("managedFields") or [] if m.get("manager")]
    if managers:
        details["last_manager"] = managers[-1]
    if kind in ("ConfigMap", "Secret"):
        data = dict(body.get("data") or {})
        data.update(body.get("binaryData") or {})
        details["keys_sha256"] = _fingerprints(data)
    else:
        details["rules_or_subjects_sha256"] = hashlib.sha256(
            repr(body.get("rules") or body.get("subjects") or []).encode()
        ).hexdigest()
    uid = str(meta.get("uid") or "")
    rv = str(meta.get("resourceVersion") or "")
    event: dict[str, Any] = {
        "time": now,
        "category": category,
        "action": action,
        "outcome": "success",
        "actor": {"kind": "system", "name": "unknown"},
        "target": {
            "resource": resource,
            "namespace": str(meta.get("namespace") or ""),
            "name": str(meta.get("name") or ""),
        },
        "details": details,
    }
    if uid and rv:
        event["id"] = f"k8s-watch-{uid}-{rv}-{action}"
    return event
