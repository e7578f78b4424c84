"""The `events` table: one row per verified event, nested members flattened (docs/review.md,
"The events table").

This is the one definition of the table. The loader builds it from each accepted line with
one JSON parse per line inside DuckDB (`ROW_SQL`), the query engine and exports read it,
and docs/review.md lists `COLUMNS` (a unit test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # DuckDB type
    meaning: str


COLUMNS: tuple[Column, ...] = (
    Column("time", "TIMESTAMPTZ", "`event.time` in UTC, to the microsecond (truncated)"),
    Column("time_ns", "BIGINT", "`event.time` exactly: nanoseconds since the Unix epoch"),
    Column("stream", "VARCHAR", "the stream id (FORMAT.md section 2)"),
    Column("epoch", "BIGINT", "the epoch of the stream"),
    Column("seq", "BIGINT", "the position in the epoch (FORMAT.md section 5)"),
    Column("id", "VARCHAR", "`event.id`"),
    Column("category", "VARCHAR", "`access`, `authorization`, `data`, `configuration`, `alert`"),
    Column("action", "VARCHAR", "`event.action`"),
    Column("outcome", "VARCHAR", "`success`, `failure`, `unknown`"),
    Column("actor_kind", "VARCHAR", "`event.actor.kind`"),
    Column("actor_name", "VARCHAR", "`event.actor.name`"),
    Column("actor_ip", "VARCHAR", "`event.actor.ip` (NULL when absent)"),
    Column("target_resource", "VARCHAR", "`event.target.resource`"),
    Column("target_namespace", "VARCHAR", "`event.target.namespace`"),
    Column("target_name", "VARCHAR", "`event.target.name`"),
    Column("source_cluster", "VARCHAR", "`event.source.cluster`"),
    Column("source_namespace", "VARCHAR", "`event.source.namespace`"),
    Column("source_pod", "VARCHAR", "`event.source.pod`"),
    Column("source_container", "VARCHAR", "`event.source.container`"),
    Column("source_node", "VARCHAR", "`event.source.node`"),
    Column("request_id", "VARCHAR", "`event.correlation.request_id`"),
    Column("trace_id", "VARCHAR", "`event.correlation.trace_id`"),
    Column(
        "audit_id",
        "VARCHAR",
        "the Kubernetes audit id (`auditID`) of an event the API server observed "
        "(`k8s-audit-<auditID>` ids of `api-server` events), else NULL",
    ),
    Column(
        "observer",
        "VARCHAR",
        "who observed it: `app`, `config-watcher`, `access-proxy`, `api-server`, `unmarked` "
        '(FORMAT.md section 11, "Who observed each event")',
    ),
    Column("details", "JSON", "`event.details` as JSON text (NULL when absent)"),
    Column("event_json", "VARCHAR", "the event exactly as stored and signed (RFC 8785 bytes)"),
)

COLUMN_NAMES = tuple(c.name for c in COLUMNS)

# One JSON parse per line: every member the table needs, `details` kept as JSON text.
_SHAPE = (
    '{"epoch":"BIGINT","seq":"BIGINT","stream":"VARCHAR","event":{'
    '"id":"VARCHAR","time":"VARCHAR","category":"VARCHAR","action":"VARCHAR",'
    '"outcome":"VARCHAR","actor":{"kind":"VARCHAR","name":"VARCHAR","ip":"VARCHAR"},'
    '"target":{"resource":"VARCHAR","namespace":"VARCHAR","name":"VARCHAR"},'
    '"source":{"cluster":"VARCHAR","namespace":"VARCHAR","pod":"VARCHAR",'
    '"container":"VARCHAR","node":"VARCHAR"},'
    '"correlation":{"request_id":"VARCHAR","trace_id":"VARCHAR"},"details":"JSON"}}'
)

# observer.py's rule (observer_of_details), in SQL over `details`.
_OBSERVER = """CASE
    WHEN json_type(d, '$.intake') IS DISTINCT FROM 'OBJECT' THEN 'unmarked'
    WHEN json_type(d, '$.intake.input') = 'VARCHAR'
         AND d->>'$.intake.input' IN ('forward', 'http') THEN
        CASE WHEN json_type(d, '$.intake.tag') = 'VARCHAR'
                  AND starts_with(d->>'$.intake.tag', 'auditlock.operator.')
                  AND json_type(d, '$.observed_by') = 'VARCHAR'
             THEN CASE WHEN d->>'$.observed_by' IN ('kube-apiserver-audit', 'watch')
                       THEN 'api-server' ELSE 'app' END
             ELSE 'app' END
    WHEN json_type(d, '$.intake.input') = 'VARCHAR' THEN
        CASE d->>'$.intake.input' WHEN 'config_files' THEN 'config-watcher'
                                  WHEN 'access_proxy' THEN 'access-proxy'
                                  ELSE 'unmarked' END
    ELSE 'unmarked'
END"""

# The event's bytes inside the line: after `{"epoch":E,"event":`, before the fixed suffix
# `,"prev":"<64 hex>","seq":N,"stream":"S"}` (FORMAT.md section 5; ids need no escaping).
_EVENT_BYTES = (
    "substr(line, strpos(line, ',\"event\":') + 9, "
    "length(line) - (strpos(line, ',\"event\":') + 8) "
    "- (94 + length(CAST(p.seq AS VARCHAR)) + length(p.stream)))"
)


def row_sql(source: str) -> str:
    """SELECT the table's rows from `source`, a relation with one VARCHAR column `line`
    holding accepted ledger lines."""
    return f"""
SELECT
    CAST(p.event.time AS TIMESTAMPTZ) AS time,
    epoch_ns(CAST(p.event.time AS TIMESTAMP_NS)) AS time_ns,
    p.stream AS stream, p.epoch AS epoch, p.seq AS seq,
    p.event.id AS id, p.event.category AS category, p.event.action AS action,
    p.event.outcome AS outcome,
    p.event.actor.kind AS actor_kind, p.event.actor.name AS actor_name,
    p.event.actor.ip AS actor_ip,
    p.event.target.resource AS target_resource, p.event.target.namespace AS target_namespace,
    p.event.target.name AS target_name,
    p.event.source.cluster AS source_cluster, p.event.source.namespace AS source_namespace,
    p.event.source.pod AS source_pod, p.event.source.container AS source_container,
    p.event.source.node AS source_node,
    p.event.correlation.request_id AS request_id, p.event.correlation.trace_id AS trace_id,
    CASE WHEN observer = 'api-server' AND starts_with(p.event.id, 'k8s-audit-')
         THEN substr(p.event.id, 11) END AS audit_id,
    observer,
    d AS details,
    {_EVENT_BYTES} AS event_json
FROM (
    SELECT line, p, d, {_OBSERVER} AS observer
    FROM (
        SELECT line, p, p.event.details AS d
        FROM (SELECT line, json_transform(line, '{_SHAPE}') AS p FROM {source})
    )
)"""


def sql_string(text: str) -> str:
    """A SQL string literal (for paths in COPY, which takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"
