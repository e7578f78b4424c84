"""The Mutating/ValidatingWebhookConfiguration objects that point the API server at the
operator. The Helm chart renders the same shape with a service clientConfig and a
namespaceSelector; tests register them with a url clientConfig on 127.0.0.1."""

from __future__ import annotations

import base64
import copy
from typing import Any

from auditlock.operator.names import ENFORCED, LABEL_ENFORCED_NAMESPACE

MUTATE_PATH = "/mutate-pods"
VALIDATE_PATH = "/validate-pods"
AUDIT_PATH = "/audit"
VALIDATE_RULES_PATH = "/validate-alertrules"

SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease"]


def _client_config(
    ca_pem: bytes, path: str, *, url: str | None, service: dict[str, Any] | None
) -> dict[str, Any]:
    config: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if url is not None:
        config["url"] = url.rstrip("/") + path
    else:
        assert service is not None
        config["service"] = {**service, "path": path}
    return config


def _rule(operation: str, resource: str) -> dict[str, Any]:
    return {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": [operation],
        "resources": [resource],
        "scope": "Namespaced",
    }


# Pod UPDATEs are sent to the webhooks only when they change a container image (the one
# mutable field that matters: `kubectl set image pod/p auditlock-collector=busybox`
# would swap the collector out), so ordinary label and annotation updates never depend
# on the fail-closed webhook. matchConditions are GA in Kubernetes 1.30. An expression
# that errors counts as a webhook failure (failurePolicy), so every field it reads is
# guarded: `subResource` is absent, not empty, on the pod itself.
IMAGE_CHANGE_CONDITION = {
    "name": "create-debug-or-image-change",
    "expression": (
        "request.operation != 'UPDATE' || "
        "(has(request.subResource) && request.subResource != '') || "
        "object.spec.containers.map(c, c.image) != oldObject.spec.containers.map(c, c.image) || "
        "(has(object.spec.initContainers) && "
        "object.spec.initContainers.map(c, c.image) != "
        "oldObject.spec.initContainers.map(c, c.image))"
    ),
}


def _rules(image_updates: bool) -> list[dict[str, Any]]:
    """Pod CREATE (inject, enforce); UPDATE of pods/ephemeralcontainers: `kubectl debug`
    adds a container to a running pod, which must not mount the collector's volumes or
    join its processes (pod_isolation); with `image_updates`, Pod UPDATE (narrowed by
    IMAGE_CHANGE_CONDITION): the collector's image must not change."""
    rules = [_rule("CREATE", "pods"), _rule("UPDATE", "pods/ephemeralcontainers")]
    if image_updates:
        rules.append(_rule("UPDATE", "pods"))
    return rules


def webhook_configurations(
    name: str,
    ca_pem: bytes,
    *,
    url: str | None = None,
    service: dict[str, Any] | None = None,
    exclude_namespaces: list[str] | None = None,
    timeout_seconds: int = 5,
    inject_failure_policy: str = "Ignore",
    namespace_labels: dict[str, str] | None = None,
    image_updates: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MutatingWebhookConfiguration, ValidatingWebhookConfiguration).

    Injection fails open (`Ignore`): an operator outage must not stop every pod in the
    cluster. Enforcement fails closed (`Fail`): a pod under `enforcement: required` is
    refused when the operator cannot vouch for it. The enforcement webhook selects only
    namespaces the operator has labelled `auditlock.io/enforcement=required` (those with
    a required policy), so an outage blocks pods there and nowhere else.

    `image_updates` (API server >= 1.30, for matchConditions) also sends Pod UPDATEs that
    change a container image, so the collector cannot be swapped out of a running pod.
    """
    excluded = sorted(set(SYSTEM_NAMESPACES + (exclude_namespaces or [])))
    namespace_selector: dict[str, Any] = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
        ]
    }
    if namespace_labels:
        namespace_selector["matchLabels"] = dict(namespace_labels)
    common = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "rules": _rules(image_updates),
        "namespaceSelector": namespace_selector,
        "matchPolicy": "Equivalent",
    }
    if image_updates:
        common["matchConditions"] = [dict(IMAGE_CHANGE_CONDITION)]
    mutating = _configuration(
        "MutatingWebhookConfiguration",
        name,
        {
            "name": "inject.auditlock.io",
            "clientConfig": _client_config(ca_pem, MUTATE_PATH, url=url, service=service),
            "failurePolicy": inject_failure_policy,
            "reinvocationPolicy": "IfNeeded",
            **common,
        },
    )
    enforced_selector = copy.deepcopy(namespace_selector)
    enforced_selector.setdefault("matchLabels", {})[LABEL_ENFORCED_NAMESPACE] = ENFORCED
    validating = _configuration(
        "ValidatingWebhookConfiguration",
        name,
        {
            "name": "enforce.auditlock.io",
            "clientConfig": _client_config(ca_pem, VALIDATE_PATH, url=url, service=service),
            "failurePolicy": "Fail",
            **common,
            "namespaceSelector": enforced_selector,
        },
    )
    return mutating, validating


def _configuration(kind: str, name: str, webhook: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


def alert_rule_webhook_configuration(
    name: str,
    ca_pem: bytes,
    *,
    url: str | None = None,
    service: dict[str, Any] | None = None,
    timeout_seconds: int = 5,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that checks AuditAlertRules at admission with
    the model (docs/alerts.md, "Validation at admission"). It fails open (`Ignore`): an
    operator outage must not block rule edits, and a rule that slipped through is
    reported `Ready=False, InvalidRule` and never evaluated."""
    return _configuration(
        "ValidatingWebhookConfiguration",
        f"{name}-alertrules",
        {
            "name": "validate.auditalertrules.auditlock.io",
            "clientConfig": _client_config(ca_pem, VALIDATE_RULES_PATH, url=url, service=service),
            "failurePolicy": "Ignore",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            "matchPolicy": "Equivalent",
            "rules": [
                {
                    "apiGroups": ["auditlock.io"],
                    "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["auditalertrules"],
                    "scope": "Namespaced",
                }
            ],
        },
    )
