"""kopf handlers for AuditAlertRule: validate, hand to the evaluator, report status.

A rule that the validating webhook let through is valid; one that reached the API
server without it (the webhook is optional in the chart, or was down under
`failurePolicy: Ignore`) is checked again here and reported as `Ready=False,
InvalidRule` with the model's message, and never evaluated. The status also says how many
of the rule's alerts the operator has firing and when it last fired.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import orjson
from pydantic import ValidationError

from auditlock.alerts.model import PLURAL, parse_rule_spec, plain_spec
from auditlock.operator.conditions import READY, condition, merge
from auditlock.policy.model import GROUP, VERSION

RULES = (GROUP, VERSION, PLURAL)

log = logging.getLogger("auditlock.operator.alert_rules")


def rule_problem(spec: dict[str, Any]) -> str | None:
    """Why a spec is not a valid rule (one line per problem), or None."""
    try:
        parse_rule_spec(spec)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
    return None


def review(body: bytes) -> dict[str, Any]:
    """The AdmissionReview answer for an AuditAlertRule CREATE or UPDATE: allowed, or
    refused with the model's words (what CEL in the CRD cannot check: a regex's shape,
    template placeholders, labels auditlock sets itself). Never raises: a body that is
    not a review is allowed, since the rule is checked again before it is evaluated."""
    try:
        request = orjson.loads(body)["request"]
        uid = str(request["uid"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _review("", {"allowed": True, "warnings": ["not an AdmissionReview"]})
    obj = request.get("object") if isinstance(request, dict) else None
    spec = obj.get("spec") if isinstance(obj, dict) else None
    problem = rule_problem(spec if isinstance(spec, dict) else {})
    if problem is None:
        return _review(uid, {"uid": uid, "allowed": True})
    name = (obj or {}).get("metadata", {}).get("name", "")
    message = f"AuditAlertRule {name} is invalid: {problem}"[:2048]
    return _review(uid, {"uid": uid, "allowed": False, "status": {"code": 422, "message": message}})


def _review(uid: str, response: dict[str, Any]) -> dict[str, Any]:
    response.setdefault("uid", uid)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


async def rule_changed(
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    alerts = memo.alerts
    if alerts is None or namespace is None:
        return
    generation = meta.get("generation")
    problem = rule_problem(dict(spec))
    if problem is not None:
        alerts.set_rule(namespace, name, None)
        ready = condition(READY, False, "InvalidRule", problem[:1024], generation)
    else:
        alerts.set_rule(namespace, name, plain_spec(parse_rule_spec(dict(spec))))
        ready = condition(READY, True, "Evaluated", "The rule is valid and evaluated.", generation)
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = merge(status.get("conditions"), [ready])
    patch.status.update(alerts.rule_status(namespace, name))
    await _publish(alerts, namespace)


async def _publish(alerts: Any, namespace: str) -> None:
    try:
        await asyncio.to_thread(alerts.publish_rules, namespace)
    except Exception as exc:  # retried by the status timer
        log.warning("alert rules of %s not published to its collectors: %s", namespace, exc)


async def rule_removed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    if memo.alerts is not None and namespace is not None:
        memo.alerts.set_rule(namespace, name, None)
        await _publish(memo.alerts, namespace)


async def rule_status(
    name: str, namespace: str | None, status: kopf.Status, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    if memo.alerts is None or namespace is None:
        return
    now = memo.alerts.rule_status(namespace, name)
    if any(status.get(k) != v for k, v in now.items()):
        patch.status.update(now)
    # Policies created after the rule, or ConfigMaps rewritten, get the file here.
    await _publish(memo.alerts, namespace)


def register(registry: kopf.OperatorRegistry, *, status_seconds: float) -> None:
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*RULES, registry=registry)(rule_changed)
    kopf.on.delete(*RULES, registry=registry, optional=True)(rule_removed)
    kopf.timer(*RULES, registry=registry, interval=status_seconds, initial_delay=1.0)(rule_status)
