"""Correlation across systems: every event that shares one id (docs/review.md, "Trace").

An app names a request in `correlation.request_id` (or `trace_id`, the W3C trace id the
access proxy takes from `traceparent`); the access proxy records the same headers; the
API server records its audit id, which a client may set itself with the `Audit-ID`
header. `trace_query(id)` selects, from every loaded trail, the events whose
`request_id`, `trace_id` or `audit_id` equals the id, in time order, and says which of
the three matched (the audit id first: the API server's events carry it as their
request id too).
"""

from __future__ import annotations

from auditlock.review.engine import TIME_ORDER
from auditlock.review.formats import RFC3339_NS
from auditlock.review.schema import sql_string


def trace_query(ident: str) -> str:
    """All columns of the matching events of `all_events`, plus `matched_by`."""
    value = sql_string(ident)
    return f"""SELECT *, CASE WHEN audit_id = {value} THEN 'audit_id'
                             WHEN request_id = {value} THEN 'request_id'
                             ELSE 'trace_id' END AS matched_by
FROM all_events
WHERE request_id = {value} OR trace_id = {value} OR audit_id = {value}
ORDER BY {TIME_ORDER}"""


def trace_table_query(ident: str) -> str:
    """The columns of a trace that fit a terminal."""
    return f"""SELECT strftime(make_timestamp_ns(time_ns), '{RFC3339_NS}') AS time, stream,
    observer, category, action, outcome, actor_name AS actor,
    concat_ws('/', target_namespace, target_resource, target_name) AS target, matched_by
FROM ({trace_query(ident)})"""
