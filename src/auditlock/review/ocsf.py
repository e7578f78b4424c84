"""Rows of the events table as OCSF events (docs/review.md, "OCSF").

Open Cybersecurity Schema Framework, schema version OCSF_VERSION (pinned: consumers
validate against one version). Each auditlock category maps to the closest OCSF class;
the table in docs/review.md is the reference and CLASSES below is its code. What OCSF has
no place for (stream, epoch, seq, observer, source, details) goes to `unmapped.auditlock`,
and `raw_data` is the event exactly as stored and signed, so an OCSF consumer can still
check it against the trail.

OCSF JSON is written one event per line (JSON Lines), the form SIEM and lake loaders
take in bulk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

OCSF_VERSION = "1.8.0"
REQUIRED_COLUMNS = frozenset(
    {"time_ns", "stream", "epoch", "seq", "id", "category", "action", "outcome",
     "actor_kind", "actor_name", "actor_ip", "target_resource", "target_namespace",
     "target_name", "source_cluster", "source_namespace", "source_pod", "source_container",
     "source_node", "request_id", "trace_id", "audit_id", "observer", "details",
     "event_json"}
)  # fmt: skip


@dataclass(frozen=True)
class OcsfClass:
    uid: int
    name: str
    category_uid: int
    category_name: str


API_ACTIVITY = OcsfClass(6003, "API Activity", 6, "Application Activity")
DATASTORE_ACTIVITY = OcsfClass(6005, "Datastore Activity", 6, "Application Activity")
ACCOUNT_CHANGE = OcsfClass(3001, "Account Change", 3, "Identity & Access Management")
AUTHORIZE_SESSION = OcsfClass(3003, "Authorize Session", 3, "Identity & Access Management")
ENTITY_MANAGEMENT = OcsfClass(3004, "Entity Management", 3, "Identity & Access Management")
USER_ACCESS = OcsfClass(3005, "User Access Management", 3, "Identity & Access Management")
FILE_ACTIVITY = OcsfClass(1001, "File System Activity", 1, "System Activity")
DETECTION_FINDING = OcsfClass(2004, "Detection Finding", 2, "Findings")

# Activity ids of each class by the event's action (FORMAT.md section 3 `action`: the
# Kubernetes verb for API-server events, the app's word otherwise); others are 99 Other.
_CRUD = {"create": 1, "get": 2, "list": 2, "watch": 2, "read": 2, "update": 3, "patch": 3,
         "delete": 4, "deletecollection": 4}  # fmt: skip
_CRUD_NAMES = ("Create", "Read", "Update", "Delete")
ACTIVITIES: dict[int, dict[str, tuple[int, str]]] = {
    API_ACTIVITY.uid: {a: (i, _CRUD_NAMES[i - 1]) for a, i in _CRUD.items()},
    DATASTORE_ACTIVITY.uid: {
        "get": (1, "Read"), "read": (1, "Read"), "update": (2, "Update"), "patch": (2, "Update"),
        "create": (6, "Create"), "delete": (7, "Delete"), "deletecollection": (7, "Delete"),
        "list": (8, "List"), "query": (4, "Query"), "write": (5, "Write"),
    },
    ACCOUNT_CHANGE.uid: {"create": (1, "Create"), "delete": (6, "Delete")},
    AUTHORIZE_SESSION.uid: {"create": (1, "Assign Privileges")},
    ENTITY_MANAGEMENT.uid: {a: (i, _CRUD_NAMES[i - 1]) for a, i in _CRUD.items()},
    USER_ACCESS.uid: {
        "create": (1, "Assign Privileges"), "update": (1, "Assign Privileges"),
        "patch": (1, "Assign Privileges"), "delete": (2, "Revoke Privileges"),
        "deletecollection": (2, "Revoke Privileges"),
    },
    FILE_ACTIVITY.uid: {
        "config.file.created": (1, "Create"), "config.file.modified": (3, "Update"),
        "config.file.deleted": (4, "Delete"),
    },
    DETECTION_FINDING.uid: {},  # every alert is a new finding: activity 1 Create
}  # fmt: skip

_ACCOUNT_RESOURCES = frozenset({"serviceaccounts", "users"})
_STATUS = {"success": (1, "Success"), "failure": (2, "Failure")}
_USER_TYPE = {"user": (1, "User"), "serviceaccount": (4, "Service"), "system": (3, "System")}


def ocsf_class(category: str, target_resource: str | None, observer: str | None) -> OcsfClass:
    """The closest OCSF class for an event (docs/review.md, "OCSF", the mapping table)."""
    resource = target_resource or ""
    if category == "access":
        return API_ACTIVITY
    if category == "authorization":
        if resource == "serviceaccounts/token":
            return AUTHORIZE_SESSION  # a token minted: a session's privileges granted
        if resource in _ACCOUNT_RESOURCES:
            return ACCOUNT_CHANGE
        return USER_ACCESS  # RBAC roles and bindings: privileges assigned or revoked
    if category == "data":
        return DATASTORE_ACTIVITY
    if category == "configuration":
        if observer == "config-watcher" or resource == "file":
            return FILE_ACTIVITY
        return ENTITY_MANAGEMENT
    return DETECTION_FINDING


def to_ocsf(row: dict[str, Any], product_version: str) -> dict[str, Any]:
    """One row of the events table (a dict of its columns) as one OCSF event."""
    cls = ocsf_class(row["category"], row["target_resource"], row["observer"])
    if cls is DETECTION_FINDING:
        activity_id, activity = 1, "Create"
    else:
        activity_id, activity = ACTIVITIES[cls.uid].get(row["action"], (99, "Other"))
    status_id, status = _STATUS.get(row["outcome"], (0, "Unknown"))
    details = orjson.loads(row["details"]) if row["details"] is not None else None
    user = _user(row["actor_kind"], row["actor_name"])
    target = _compact(
        {"name": row["target_name"], "type": row["target_resource"],
         "namespace": row["target_namespace"]}
    )  # fmt: skip
    correlation = row["request_id"] or row["trace_id"] or row["audit_id"]
    event: dict[str, Any] = {
        "class_uid": cls.uid,
        "class_name": cls.name,
        "category_uid": cls.category_uid,
        "category_name": cls.category_name,
        "activity_id": activity_id,
        "activity_name": activity if activity_id != 99 else row["action"],
        "type_uid": cls.uid * 100 + activity_id,
        "type_name": f"{cls.name}: {activity if activity_id != 99 else 'Other'}",
        "severity_id": 3 if cls is DETECTION_FINDING else 1,
        "severity": "Medium" if cls is DETECTION_FINDING else "Informational",
        "status_id": status_id,
        "status": status,
        "time": row["time_ns"] // 1_000_000,
        "message": f"{row['actor_name']} {row['action']} {_entity_uid(row) or ''}".rstrip(),
        "metadata": _compact(
            {
                "version": OCSF_VERSION,
                "product": {
                    "name": "auditlock",
                    "vendor_name": "auditlock",
                    "version": product_version,
                },
                "uid": row["id"],
                "correlation_uid": correlation,
                "log_name": row["stream"],
                "sequence": row["seq"],
                "original_time": _rfc3339(row["time_ns"]),
            }
        ),
        "actor": {"user": user},
        "raw_data": row["event_json"],
        "unmapped": {
            "auditlock": _compact(
                {
                    "stream": row["stream"],
                    "epoch": row["epoch"],
                    "seq": row["seq"],
                    "observer": row["observer"],
                    "action": row["action"],
                    "request_id": row["request_id"],
                    "trace_id": row["trace_id"],
                    "audit_id": row["audit_id"],
                    "source": _compact(
                        {
                            k: row[f"source_{k}"]
                            for k in ("cluster", "namespace", "pod", "container", "node")
                        }
                    ),
                    "details": details,
                }
            )
        },
    }
    if row["actor_ip"]:
        event["src_endpoint"] = {"ip": row["actor_ip"]}
    _class_members(cls, event, row, user, target, details)
    return event


def _class_members(
    cls: OcsfClass,
    event: dict[str, Any],
    row: dict[str, Any],
    user: dict[str, Any],
    target: dict[str, Any],
    details: Any,
) -> None:
    """The members each class requires or recommends, from what the event says."""
    if cls in (API_ACTIVITY, DATASTORE_ACTIVITY):
        api: dict[str, Any] = {"operation": row["action"]}
        if row["request_id"] or row["audit_id"]:
            api["request"] = {"uid": row["request_id"] or row["audit_id"]}
        event["api"] = api
        if target:
            event["resources"] = [target]
    elif cls in (ACCOUNT_CHANGE, AUTHORIZE_SESSION):
        # the service account whose token was minted or which was created or deleted
        event["user"] = _compact({"name": row["target_name"], "type": "Service", "type_id": 4})
    elif cls is USER_ACCESS:
        subjects = details.get("subjects") if isinstance(details, dict) else None
        role = details.get("roleRef") if isinstance(details, dict) else None
        first = subjects[0] if isinstance(subjects, list) and subjects else None
        if isinstance(first, dict) and first.get("name"):
            event["user"] = _compact({"name": first.get("name"), "type": first.get("kind")})
        else:
            event["user"] = {"name": row["target_name"] or row["target_resource"]}
        privilege = role.get("name") if isinstance(role, dict) else None
        event["privileges"] = [str(privilege or f"{row['target_resource']}/{row['target_name']}")]
        if target:
            event["resource"] = target
    elif cls is ENTITY_MANAGEMENT:
        event["entity"] = _compact({"name": row["target_name"], "type": row["target_resource"],
                                    "uid": _entity_uid(row)})  # fmt: skip
    elif cls is FILE_ACTIVITY:
        path = row["target_name"] or ""
        event["file"] = _compact({"name": path.rsplit("/", 1)[-1] or path, "path": path,
                                  "type": "Regular File", "type_id": 1})  # fmt: skip
    else:  # DETECTION_FINDING
        event["finding_info"] = {"uid": row["id"], "title": row["action"]}
        event["is_alert"] = True
        if target:
            event["resources"] = [target]


def _entity_uid(row: dict[str, Any]) -> str | None:
    parts = [row["target_namespace"], row["target_resource"], row["target_name"]]
    return "/".join(p for p in parts if p) or None


def _user(kind: str | None, name: str | None) -> dict[str, Any]:
    type_id, type_name = _USER_TYPE.get(kind or "", (0, "Unknown"))
    return _compact({"name": name, "type": type_name, "type_id": type_id})


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != {}}


def _rfc3339(time_ns: int) -> str:
    from auditlock.ledger.timestamps import format_ns

    return format_ns(time_ns)


def rows(con: Any, query: str, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """The rows of `query` as dicts, a batch at a time (bounded memory)."""
    reader = con.sql(query).to_arrow_reader(batch)
    for record_batch in reader:
        yield from record_batch.to_pylist()


def write(con: Any, query: str, out: IO[bytes], product_version: str) -> int:
    """Write `query`'s rows (rows of the events table) as OCSF JSON Lines; return count."""
    n = 0
    for row in rows(con, query):
        out.write(orjson.dumps(to_ocsf(row, product_version)) + b"\n")
        n += 1
    return n
