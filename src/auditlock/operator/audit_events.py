"""Map Kubernetes API server audit events and watched object changes to ledger events.

Pure functions (unit-tested) used by `capture.py`. The ledger event model is
auditlock.ledger.event.AuditEvent: id, time, category, action, outcome, actor, target,
correlation, details; the operator's collector fills `source` with its own identity, so
where the event was observed (the API server's audit webhook or a watch) is recorded in
`details.observed_by`. Secret values never leave the cluster: the audit policy logs
Secrets at Metadata level, and the values' keyed hashes are added by
`secret_hashes.py` (the watch fallback hashes what the watch delivered the same way).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from typing import Any

from auditlock.ledger.normalize import ID_RE
from auditlock.ledger.timestamps import normalize_time
from auditlock.ledger.value_hash import value_hash
from auditlock.ledger.values import normalize_ip
from auditlock.operator.kube import SecretSeen
from auditlock.operator.secret_hashes import MAX_KEYS, NO_KEY, summary

LONG_RUNNING = frozenset({"exec", "attach", "portforward", "proxy"})
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Objects whose writes change how the cluster runs: (API group, resource). Reads of them
# are noise; their contents stay with the API server (the audit policy logs Metadata).
CONFIGURATION = frozenset(
    {
        ("", "configmaps"),
        ("", "services"),
        ("", "namespaces"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "networkpolicies"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("auditlock.io", "auditpolicies"),
    }
)
# Written through a subresource, still a change of the object (kubectl scale).
CONFIGURATION_SUBRESOURCES = frozenset({"", "scale"})
# The auditor's own policy: recorded in every namespace, with or without a policy left.
AUDIT_POLICIES = ("auditlock.io", "auditpolicies")
MAX_LIST = 64
MAX_TEXT = 256
# Stored API-server events are named `k8s-audit-<auditID>` (an id prefix only the
# operator's collector may use: sidecar/pipeline/observers.py).
AUDIT_ID_PREFIX = "k8s-audit-"


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
        # One that is no address is kept as text in details.source_ips.
        with contextlib.suppress(ValueError):
            actor["ip"] = normalize_ip(str(source_ips[0])[:64])
    return actor


def category_for(group: str, resource: str, subresource: str, verb: str) -> str | None:
    """The SOC 2 category of an API request, or None when it is not captured."""
    if group == "":
        if resource == "pods" and subresource in LONG_RUNNING:
            return "access"
        if resource == "secrets" and not subresource:
            return "access" if verb in READ_VERBS else "data"
        if resource == "serviceaccounts" and subresource == "token":
            return "authorization" if verb == "create" else None
    if group == RBAC_GROUP and resource in RBAC and not subresource:
        return "authorization" if verb in WRITE_VERBS else None
    if (group, resource) in CONFIGURATION and subresource in CONFIGURATION_SUBRESOURCES:
        return "configuration" if verb in WRITE_VERBS else None
    return None


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT]


def _pick(value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The named members of an object, each a string or a list of strings, bounded."""
    out: dict[str, Any] = {}
    for key, item in _object(value).items():
        if key not in keys:
            continue
        if isinstance(item, list):
            out[key] = [_text(v) for v in item[:MAX_LIST]]
        elif item is not None and not isinstance(item, dict):
            out[key] = _text(item)
    return out


def _rbac_details(body: dict[str, Any]) -> dict[str, Any]:
    """Who was granted what: a binding's subjects and roleRef, a role's rules, as the
    request (Request level) sent them; a patch carries only what it changes."""
    out: dict[str, Any] = {}
    subjects = body.get("subjects")
    if isinstance(subjects, list):
        out["subjects"] = [
            _pick(s, ("kind", "name", "namespace", "apiGroup")) for s in subjects[:MAX_LIST]
        ]
    if "roleRef" in body:
        out["role_ref"] = _pick(body.get("roleRef"), ("apiGroup", "kind", "name"))
    rules = body.get("rules")
    if isinstance(rules, list):
        keys = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
        out["rules"] = [_pick(r, keys) for r in rules[:MAX_LIST]]
    aggregation = _object(body.get("aggregationRule")).get("clusterRoleSelectors")
    if isinstance(aggregation, list):
        out["aggregation_selectors"] = len(aggregation)
    return out


def _labels(body: dict[str, Any]) -> dict[str, str] | None:
    labels = _object(_object(body.get("metadata")).get("labels"))
    if not labels:
        return None
    return {_text(k): _text(v) for k, v in list(labels.items())[:MAX_LIST]}


def in_scope(event: dict[str, Any], namespaces: set[str]) -> bool:
    """Cluster-scoped requests (no namespace) always; namespaced ones when a policy
    covers the namespace, and writes to AuditPolicy objects in any namespace."""
    ref = _object(event.get("objectRef"))
    namespace = ref.get("namespace")
    if not namespace or ref.get("resource") == "namespaces":
        return True
    if not isinstance(namespace, str):
        return False
    return namespace in namespaces or (ref.get("apiGroup"), ref.get("resource")) == AUDIT_POLICIES


def from_audit_event(event: dict[str, Any], namespaces: set[str]) -> dict[str, Any] | None:
    """A ledger event for one `audit.k8s.io/v1` Event, or None when it is out of scope
    (another namespace, not a captured kind of request, or not the final stage; for a
    failed authentication the API server's only stage, ResponseStarted)."""
    stage = event.get("stage")
    if stage not in ("ResponseComplete", "Panic") and not (
        # A failed authentication is audited once, at ResponseStarted, and never completes.
        stage == "ResponseStarted" and _object(event.get("responseStatus")).get("code") == 401
    ):
        return None
    ref = event.get("objectRef")
    if not isinstance(ref, dict) or not in_scope(event, namespaces):
        return None
    namespace = ref.get("namespace")
    group = ref.get("apiGroup")
    group = group if isinstance(group, str) else ""
    resource = str(ref.get("resource") or "")
    subresource = str(ref.get("subresource") or "")
    verb = str(event.get("verb") or "")
    category = category_for(group, resource, subresource, verb)
    if category is None:
        return None
    audit_id = str(event.get("auditID") or "")
    # The API server's auditID (a UUID) names the stored event; one no event id can
    # carry is kept as text (details.audit_id) and the collector assigns the id.
    audit_id_fits = bool(ID_RE.match(f"{AUDIT_ID_PREFIX}{audit_id}"))
    code = _object(event.get("responseStatus")).get("code")
    outcome = ("success" if code < 400 else "failure") if isinstance(code, int) else "unknown"
    action = (subresource if subresource in LONG_RUNNING else verb) or "unknown"
    target: dict[str, Any] = {"resource": resource}
    if isinstance(namespace, str) and namespace:
        target["namespace"] = namespace
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
    reason = _object(event.get("responseStatus")).get("reason")
    if reason and outcome == "failure":
        details["status_reason"] = _text(reason)
    if event.get("userAgent"):
        details["user_agent"] = str(event["userAgent"])[:512]
    user = _object(event.get("user"))
    groups = user.get("groups")
    if isinstance(groups, list):
        details["groups"] = [str(g) for g in groups][:32]
    impersonated = _object(event.get("impersonatedUser"))
    if impersonated:
        # The actor is who authenticated; whom they acted as is recorded beside it.
        details["impersonated_user"] = _pick(impersonated, ("username", "uid", "groups"))
    if group:
        details["api_group"] = group
    annotations = _object(event.get("annotations"))
    decision = annotations.get("authorization.k8s.io/decision")
    if decision:
        details["authorization"] = {
            "decision": _text(decision),
            "reason": _text(annotations.get("authorization.k8s.io/reason") or ""),
        }
    body = _object(event.get("requestObject"))
    if category == "authorization" and group == RBAC_GROUP and body:
        details.update(_rbac_details(body))
    if resource == "namespaces" and body:
        labels = _labels(body)
        if labels is not None:
            details["labels"] = labels
    source_ips = event.get("sourceIPs")
    actor = _actor(user, source_ips)
    if isinstance(source_ips, list) and source_ips and "ip" not in actor:
        details["source_ips"] = [_text(ip)[:64] for ip in source_ips[:MAX_LIST]]
    if audit_id and not audit_id_fits:
        details["audit_id"] = _text(audit_id)[:256]
    result: dict[str, Any] = {
        "category": category,
        "action": action,
        "outcome": outcome,
        "actor": actor,
        "target": target,
        "details": details,
    }
    when = _request_time(event)
    if when is not None:
        result["time"] = when
    else:
        # Without a time the collector stamps its own receipt time; what the event
        # said is kept beside it.
        details["request_received"] = _text(event.get("requestReceivedTimestamp"))[:64]
    if audit_id and audit_id_fits:
        result["id"] = f"{AUDIT_ID_PREFIX}{audit_id}"
        result["correlation"] = {"request_id": audit_id}
    return result


def _request_time(event: dict[str, Any]) -> str | None:
    """When the API server received the request (its final stage's time when that is
    missing), in the ledger's form; None when neither is an RFC 3339 time."""
    for member in ("requestReceivedTimestamp", "stageTimestamp"):
        value = event.get(member)
        if isinstance(value, str):
            try:
                return normalize_time(value)
            except ValueError:
                continue
    return None


def _fingerprints(data: dict[str, Any] | None) -> dict[str, str]:
    """Key -> SHA-256 of a ConfigMap value: what changed, checkable by anyone."""
    return {str(k): value_hash(str(v).encode()) for k, v in sorted((data or {}).items())}


def _secret_seen(body: dict[str, Any]) -> SecretSeen:
    meta = _object(body.get("metadata"))
    values: dict[str, bytes] = {}
    for key, encoded in _object(body.get("data")).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded or ""), validate=True)
        except (binascii.Error, ValueError):
            values[str(key)] = str(encoded).encode()
    return SecretSeen(str(meta.get("resourceVersion") or ""), str(body.get("type") or ""), values)


WATCHED = {
    # kind -> (resource, category)
    "ConfigMap": ("configmaps", "configuration"),
    "Secret": ("secrets", "data"),
    "Role": ("roles", "authorization"),
    "RoleBinding": ("rolebindings", "authorization"),
}


def from_watch_event(
    kind: str, event_type: str, body: dict[str, Any], now: str, secret_key: bytes | None = None
) -> dict[str, Any] | None:
    """A ledger event for one watch event of a watched kind (the fallback for clusters
    whose API server audit cannot be configured). The watch does not say who made the
    change; `actor` is recorded as unknown (system) and the managedFields manager, when
    present, goes into details. A Secret's values are hashed under `secret_key`
    (`details.secret`, as on the audit path); without a key only its key names are kept."""
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
    if kind == "Secret":
        seen = _secret_seen(body)
        if secret_key is not None:
            details["secret"] = summary(seen, secret_key)
        else:
            details["secret"] = {"key_names": sorted(seen.values)[:MAX_KEYS], "not_hashed": NO_KEY}
    elif kind == "ConfigMap":
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
