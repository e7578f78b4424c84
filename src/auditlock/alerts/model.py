"""The AuditAlertRule custom resource as pydantic models: the single source of truth.

The CRD in `crds/` is generated from these classes (`auditlock crds`, alerts/crd.py), so
every description here is what `kubectl explain auditalertrule.spec...` shows. Why rules
are a kind of their own and not a section of AuditPolicy: docs/alerts.md, "Rules are
resources".

The model checks everything a rule can get wrong (field paths, bounded regular
expressions, templates, thresholds) with a message that says what to write instead. The
operator runs it in its validating webhook, so `kubectl apply` refuses a bad rule; the
evaluation code (alerts/rules.py) takes the validated spec as a plain dict and never
imports pydantic, because it runs inside the collector.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from auditlock.alerts import patterns, template
from auditlock.policy.model import GROUP, VERSION, Condition, FieldPath

KIND = "AuditAlertRule"
PLURAL = "auditalertrules"
SINGULAR = "auditalertrule"
SHORT_NAMES = ("aar", "alertrule")
API_VERSION = f"{GROUP}/{VERSION}"

MAX_CONDITIONS = 16
MAX_VALUES = 256
MAX_VALUE_LENGTH = 1024
MAX_GROUP_BY = 4
MAX_LABELS = 16
MAX_THRESHOLD = 10_000
MAX_WINDOW_SECONDS = 86_400
# Label names as Alertmanager and Prometheus accept them; values are free text.
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$"
# Labels auditlock sets itself on every alert (alerts/alert.py); a rule may not override
# them, or Alertmanager would route one rule's alert as another's.
RESERVED_LABELS = frozenset(
    {"alertname", "severity", "namespace", "rule", "stream", "pod", "auditlock_source"}
)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class FieldTest(_Model):
    """A test on one event field. Exactly one of equals, in, glob or regex."""

    # `in` is a CEL keyword: CEL names the property `__in__`.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.equals), has(self.__in__), has(self.glob), "
                    "has(self.regex)].filter(x, x).size() == 1",
                    "message": "set exactly one of equals, in, glob or regex",
                }
            ]
        }
    )

    field: FieldPath
    equals: str | None = Field(
        default=None, max_length=MAX_VALUE_LENGTH, description="The field's text equals this."
    )
    in_: list[str] | None = Field(
        default=None,
        alias="in",
        min_length=1,
        max_length=MAX_VALUES,
        description="The field's text equals one of these.",
    )
    glob: str | None = Field(
        default=None,
        max_length=MAX_VALUE_LENGTH,
        description="Shell-style pattern on the field's text: * any run, ? one character, "
        "[abc] a set (e.g. system:serviceaccount:*).",
    )
    regex: str | None = Field(
        default=None,
        max_length=patterns.MAX_REGEX_LENGTH,
        description="Regular expression searched in the field's text (Python syntax, "
        "anchors ^ and $ as needed). Refused at admission: back-references, look-around, "
        "and a repeated group that itself repeats (catastrophic backtracking).",
    )
    negate: bool = Field(
        default=False, description="The condition holds when the test does NOT pass."
    )

    @model_validator(mode="after")
    def _one_test(self) -> FieldTest:
        chosen = [n for n in ("equals", "in_", "glob", "regex") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"condition on {self.field}: set exactly one of equals, in, glob or regex, "
                f"got {len(chosen)}"
            )
        if self.glob is not None:
            problem = patterns.glob_problem(self.glob)
            if problem:
                raise ValueError(f"condition on {self.field}: {problem}")
        if self.regex is not None:
            problem = patterns.regex_problem(self.regex)
            if problem:
                raise ValueError(f"condition on {self.field}: {problem}")
        if self.in_ is not None and any(len(v) > MAX_VALUE_LENGTH for v in self.in_):
            raise ValueError(f"condition on {self.field}: values longer than {MAX_VALUE_LENGTH}")
        return self


class Threshold(_Model):
    """Fire only when at least `count` matching events arrive within `windowSeconds`
    (counted separately for each group, see groupBy)."""

    count: int = Field(ge=1, le=MAX_THRESHOLD, description="Matches needed within the window.")
    window_seconds: int = Field(
        ge=1, le=MAX_WINDOW_SECONDS, description="Length of the sliding window in seconds."
    )


class Absence(_Model):
    """Fire when a stream of this namespace has written no event and no checkpoint for
    `forSeconds` (its collector is down, stuck or silenced). Checked by the operator from
    the destination itself, not by the collector that went quiet."""

    for_seconds: int = Field(
        ge=60,
        le=MAX_WINDOW_SECONDS,
        description="Silence that fires the alert, in seconds (at least 60: a healthy "
        "collector writes a checkpoint every minute even when idle).",
    )
    streams: str = Field(
        default="*",
        max_length=253,
        description="Glob on stream ids (<cluster>_<namespace>_<pod>) this rule watches.",
    )


class AuditAlertRuleSpec(_Model):
    """An alert on audit events of this namespace: a match (optionally counted over a
    window), or the absence of a stream's events and checkpoints."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.absence) ? (!has(self.match) || size(self.match) == 0) "
                    "&& !has(self.threshold) : has(self.match) && size(self.match) > 0",
                    "message": "set match (conditions on event fields) or absence, not both",
                }
            ]
        }
    )

    severity: Literal["critical", "warning", "info"] = Field(
        default="warning", description="critical, warning or info; an Alertmanager label."
    )
    summary: str = Field(
        min_length=1,
        max_length=template.MAX_TEMPLATE_LENGTH,
        description="One line for the on-call engineer. A field path between double curly "
        "braces (e.g. actor.name) is replaced by that field of the alert's first event; "
        "count, window, stream, rule and namespace by the alert's own values. No other "
        "template syntax (docs/alerts.md, Templates).",
    )
    description: str = Field(
        default="",
        max_length=template.MAX_TEMPLATE_LENGTH,
        description="More detail, same placeholders as summary.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels for routing in Alertmanager (e.g. team: payments).",
        json_schema_extra={"maxProperties": MAX_LABELS},
    )
    match: list[FieldTest] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Conditions on event fields that must all hold. Required unless "
        "absence is set.",
    )
    group_by: list[FieldPath] = Field(
        default_factory=list,
        max_length=MAX_GROUP_BY,
        description="Event fields whose values each make an alert of their own, with its "
        "own threshold count (e.g. actor.name: one alert per actor); each becomes a label "
        "(actor_name). Empty: one alert for the rule.",
    )
    threshold: Threshold | None = Field(
        default=None, description="Count matches over a sliding window before firing."
    )
    absence: Absence | None = Field(
        default=None, description="Fire on a silent stream instead of on events."
    )
    resolve_after_seconds: int = Field(
        default=300,
        ge=10,
        le=MAX_WINDOW_SECONDS,
        description="An event alert resolves when no further match came for this long.",
    )

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, labels: dict[str, str]) -> dict[str, str]:
        import re

        if len(labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for name, value in labels.items():
            if not re.match(_LABEL_NAME, name):
                raise ValueError(f"label {name!r} is not a valid Alertmanager label name")
            if name in RESERVED_LABELS:
                raise ValueError(f"label {name!r} is set by auditlock; choose another name")
            if len(value) > MAX_VALUE_LENGTH:
                raise ValueError(f"label {name!r}: value longer than {MAX_VALUE_LENGTH}")
        return labels

    @field_validator("summary", "description")
    @classmethod
    def _template_valid(cls, text: str) -> str:
        problem = template.template_problem(text)
        if problem:
            raise ValueError(problem)
        return text

    @model_validator(mode="after")
    def _kind_of_rule(self) -> AuditAlertRuleSpec:
        if self.absence is not None:
            if self.match or self.threshold is not None or self.group_by:
                raise ValueError("an absence rule takes no match, threshold or groupBy")
        elif not self.match:
            raise ValueError("set match (conditions on event fields) or absence")
        return self


class AuditAlertRuleStatus(_Model):
    """What the operator observed. Written only by the operator."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation the status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready: the rule is valid and evaluated."
    )
    firing: int | None = Field(default=None, description="Alerts of this rule firing now.")
    last_fired: str | None = Field(
        default=None,
        description="When this rule last fired (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


def parse_rule_spec(spec: dict[str, Any]) -> AuditAlertRuleSpec:
    """Validate a spec as it comes from the API (camelCase keys)."""
    return AuditAlertRuleSpec.model_validate(spec)


def plain_spec(spec: AuditAlertRuleSpec) -> dict[str, Any]:
    """The validated spec as the plain dict the evaluation code compiles (camelCase)."""
    return spec.model_dump(by_alias=True, exclude_none=True)
