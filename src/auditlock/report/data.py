"""The report's data, drawn with SQL from the verified-event table (review/schema.py).

Every figure aggregates inside DuckDB, so a report over ten million events moves a few
thousand rows into Python. Tables of privileged changes keep their newest MAX_ROWS rows
and count the rest. Which events count as what:

* denial: outcome `failure` and HTTP status 401 or 403, or an authorization decision
  `forbid` (the API server's annotation); every other `failure` is a failure;
* Secret read: `get`, `list` or `watch` of `secrets`;
* configuration change: category `configuration`;
* RBAC change: category `authorization` on roles, rolebindings, clusterroles or
  clusterrolebindings (create, update, patch, delete, deletecollection);
* AuditPolicy change: any write to `auditpolicies`;
* exec session: action or subresource `exec`, `attach` or `portforward` on pods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from auditlock.ledger.timestamps import format_ns
from auditlock.report.model import (
    Change,
    CheckpointTrack,
    Problem,
    ReportData,
    Retention,
    StreamRow,
    Verification,
)

MAX_ROWS = 500
TOP = 15
MINUTE_NS = 60_000_000_000
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
# Activity is counted per hour; a few hours of events per minute (one or two bars say
# nothing), longer than two weeks per day (thousands of hourly bars say nothing either).
PER_MINUTE_UP_TO_NS = 3 * HOUR_NS
HOURLY_UP_TO_NS = 14 * DAY_NS

WRITES = "('create', 'update', 'patch', 'delete', 'deletecollection')"
RBAC = "('roles', 'rolebindings', 'clusterroles', 'clusterrolebindings')"
EXEC = "('exec', 'attach', 'portforward')"
DENIAL = (
    "(outcome = 'failure' AND (TRY_CAST(json_extract(details, '$.status_code') AS BIGINT) "
    "IN (401, 403) OR json_extract_string(details, '$.authorization.decision') = 'forbid'))"
)


def build(
    engine: Any,
    trails: Sequence[Any],
    *,
    title: str,
    since_ns: int | None,
    until_ns: int | None,
    generated_at: str,
    checkpoints: list[CheckpointTrack],
    slack_seconds: float,
) -> ReportData:
    """ReportData from `engine` (review.Engine: the view `events`, already narrowed to the
    period) and the loaded trails (their verify reports and exclusions)."""
    sql = _Sql(engine)
    count, first, last = sql.one("SELECT count(*), min(time_ns), max(time_ns) FROM events")
    span = (last - first) if count else 0
    if span <= PER_MINUTE_UP_TO_NS:
        bucket, unit = MINUTE_NS, "minute"
    elif span <= HOURLY_UP_TO_NS:
        bucket, unit = HOUR_NS, "hour"
    else:
        bucket, unit = DAY_NS, "day"
    data = ReportData(
        title=title,
        since=format_ns(since_ns) if since_ns is not None else None,
        until=format_ns(until_ns) if until_ns is not None else None,
        generated_at=generated_at,
        verification=verification(trails),
        events=int(count),
        first_event=format_ns(first) if count else None,
        last_event=format_ns(last) if count else None,
        bucket=unit,
        checkpoints=checkpoints,
        slack_seconds=slack_seconds,
    )
    data.per_hour = [
        (format_ns(b * bucket), str(c), int(n))
        for b, c, n in sql.rows(
            f"SELECT time_ns // {bucket} AS b, category, count(*) FROM events "
            "GROUP BY ALL ORDER BY b, category"
        )
    ]
    data.failures = [
        (format_ns(b * bucket), "denial" if denial else "failure", int(n))
        for b, denial, n in sql.rows(
            f"SELECT time_ns // {bucket} AS b, {DENIAL} AS denial, count(*) FROM events "
            "WHERE outcome = 'failure' GROUP BY ALL ORDER BY b, denial"
        )
    ]
    data.top_actors = [
        (f"{kind}:{name}", int(n))
        for kind, name, n in sql.rows(
            "SELECT actor_kind, actor_name, count(*) AS n FROM events GROUP BY ALL "
            f"ORDER BY n DESC, actor_kind, actor_name LIMIT {TOP}"
        )
    ]
    data.secret_reads = [
        (f"{kind}:{name}", int(n))
        for kind, name, n in sql.rows(
            "SELECT actor_kind, actor_name, count(*) AS n FROM events "
            "WHERE target_resource = 'secrets' AND action IN ('get', 'list', 'watch') "
            f"GROUP BY ALL ORDER BY n DESC, actor_kind, actor_name LIMIT {TOP}"
        )
    ]
    step = MINUTE_NS if span <= DAY_NS else bucket
    data.config_timeline = [
        (format_ns(b * step), str(resource or "(none)"), str(outcome), int(n))
        for b, resource, outcome, n in sql.rows(
            f"SELECT time_ns // {step} AS b, target_resource, outcome, count(*) FROM events "
            "WHERE category = 'configuration' GROUP BY ALL ORDER BY b, target_resource, outcome"
        )
    ]
    data.rbac_changes = _changes(
        sql, data, "table-rbac",
        f"category = 'authorization' AND target_resource IN {RBAC} AND action IN {WRITES}",
        _rbac_detail,
    )  # fmt: skip
    data.policy_changes = _changes(
        sql, data, "table-policy",
        "target_resource = 'auditpolicies' AND action NOT IN ('get', 'list', 'watch')",
        _policy_detail,
    )  # fmt: skip
    data.exec_sessions = _changes(
        sql, data, "table-exec",
        f"(action IN {EXEC} OR target_resource IN ('pods/exec', 'pods/attach', "
        "'pods/portforward'))",
        _exec_detail,
    )  # fmt: skip
    return data


def _changes(sql: _Sql, data: ReportData, table: str, where: str, detail: Any) -> list[Change]:
    total = int(sql.one(f"SELECT count(*) FROM events WHERE {where}")[0])
    rows = sql.rows(
        "SELECT time_ns, stream, seq, actor_kind, actor_name, action, outcome, "
        "target_resource, target_namespace, target_name, details FROM events "
        f"WHERE {where} ORDER BY time_ns DESC, stream, seq LIMIT {MAX_ROWS}"
    )
    if total > len(rows):
        data.truncated[table] = total - len(rows)
    changes = []
    for time_ns, stream, seq, kind, name, action, outcome, resource, namespace, tname, raw in rows:
        details = _details(raw)
        target = "/".join(p for p in (resource, namespace, tname) if p)
        changes.append(
            Change(format_ns(time_ns), stream, int(seq), f"{kind}:{name}", action, outcome,
                   target, detail(details))
        )  # fmt: skip
    changes.reverse()  # oldest first, as a reader reads a timeline
    return changes


def _details(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _rbac_detail(details: dict[str, Any]) -> str:
    subjects = details.get("subjects")
    role = details.get("role_ref")
    rules = details.get("rules")
    parts = []
    if isinstance(subjects, list):
        names = [
            f"{s.get('kind', '?')}:{s.get('name', '?')}" for s in subjects if isinstance(s, dict)
        ]
        parts.append(", ".join(names))
    if isinstance(role, dict):
        parts.append(f"→ {role.get('kind', '?')}/{role.get('name', '?')}")
    if isinstance(rules, list):
        parts.append(f"{len(rules)} rule(s)")
    if details.get("status_code") in (401, 403):
        parts.append(f"refused ({details['status_code']})")
    return " ".join(parts)


def _policy_detail(details: dict[str, Any]) -> str:
    code = details.get("status_code")
    return f"HTTP {code}" if code is not None else ""


def _exec_detail(details: dict[str, Any]) -> str:
    uri = details.get("request_uri")
    if not isinstance(uri, str):
        return ""
    query = parse_qs(urlsplit(uri).query)
    command = " ".join(query.get("command", []))
    container = ",".join(query.get("container", []))
    return (f"{command}" + (f" (container {container})" if container else "")).strip()


def verification(trails: Sequence[Any]) -> Verification:
    """The summary of the verifications the report's events come from."""
    streams: list[StreamRow] = []
    findings: list[Problem] = []
    warnings: list[Problem] = []
    excluded: list[Problem] = []
    objects: list[dict[str, Any]] = []
    trusts = []
    events = checkpoints = 0
    for trail in trails:
        report = trail.report
        trusts.append(str(report.get("trust", "")))
        events += int(report.get("events_verified", 0))
        checkpoints += int(report.get("checkpoints_verified", 0))
        for s in report.get("streams", []):
            streams.append(
                StreamRow(
                    stream=str(s.get("stream")), state=str(s.get("state")),
                    epochs=int(s.get("epochs", 0)), events=int(s.get("events", 0)),
                    checkpoints=int(s.get("checkpoints", 0)),
                    first_checkpoint=s.get("first_checkpoint_time"),
                    last_checkpoint=s.get("last_checkpoint_time"),
                    key_ids=tuple(str(k) for k in s.get("key_ids", [])),
                )
            )  # fmt: skip
        findings += [_problem(f) for f in report.get("findings", [])]
        warnings += [_problem(w) for w in report.get("warnings", [])]
        objects += report.get("objects", [])
        gone = trail.excluded
        for s in gone.get("streams", []):
            if s.get("excluded"):
                excluded.append(
                    Problem("excluded", f"stream {s.get('stream')}",
                            f"{s['excluded']:,} of {s.get('stored', 0):,} stored events did "
                            "not verify (see the findings)")
                )  # fmt: skip
    result = "PASS" if all(t.report.get("result") == "PASS" for t in trails) else "FAIL"
    return Verification(
        urls=tuple(t.url for t in trails),
        result=result,
        trust="; ".join(sorted(set(trusts))),
        events_verified=events,
        checkpoints_verified=checkpoints,
        streams=tuple(streams),
        findings=tuple(findings),
        warnings=tuple(warnings),
        excluded=tuple(excluded),
        retention=_retention(objects),
    )


def _problem(item: dict[str, Any]) -> Problem:
    place = []
    if item.get("stream") is not None:
        place.append(f"stream {item['stream']}")
    if item.get("epoch") is not None:
        place.append(f"epoch {item['epoch']}")
    if item.get("first_seq") is not None:
        last = item.get("last_seq", item["first_seq"])
        place.append(f"seq {item['first_seq']}" + (f"-{last}" if last != item["first_seq"] else ""))
    if item.get("object") is not None:
        place.append(f"({item['object']})")
    return Problem(str(item.get("code")), " ".join(place) or "trail", str(item.get("message")))


def _retention(objects: list[dict[str, Any]]) -> Retention | None:
    if not objects:
        return None
    modes: dict[str, int] = {}
    for o in objects:
        mode = str(o.get("mode") or "none")
        modes[mode] = modes.get(mode, 0) + 1
    until = [str(o["retain_until"]) for o in objects if o.get("retain_until")]
    return Retention(
        objects=len(objects),
        modes=modes,
        earliest_retain_until=min(until) if until else None,
        legal_holds=sum(1 for o in objects if o.get("legal_hold")),
    )


class _Sql:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = self.engine.sql(query).fetchall()
        return result

    def one(self, query: str) -> tuple[Any, ...]:
        return self.rows(query)[0]
