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


def _rules() -> list[dict[str, Any]]:
    """Pod CREATE (inject, enforce) and UPDATE of pods/ephemeralcontainers: `kubectl
    debug` adds a container to a running pod, which must not mount the collector's
    volumes or join its processes (pod_isolation)."""
    return [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        },
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["pods/ephemeralcontainers"],
            "scope": "Namespaced",
        },
    ]


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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MutatingWebhookConfiguration, ValidatingWebhookConfiguration).

    Injection fails open (`Ignore`): an operator outage must not stop every pod in the
    cluster. Enforcement fails closed (`Fail`): a pod under `enforcement: required` is
    refused when the operator cannot vouch for it. The enforcement webhook selects only
    namespaces the operator has labelled `auditlock.io/enforcement=required` (those with
    a required policy), so an outage blocks pods there and nowhere else.
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
        "rules": _rules(),
        "namespaceSelector": namespace_selector,
        "matchPolicy": "Equivalent",
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "inject.auditlock.io",
                "clientConfig": _client_config(ca_pem, MUTATE_PATH, url=url, service=service),
                "failurePolicy": inject_failure_policy,
                "reinvocationPolicy": "IfNeeded",
                **common,
            }
        ],
    }
    enforced_selector = copy.deepcopy(namespace_selector)
    enforced_selector.setdefault("matchLabels", {})[LABEL_ENFORCED_NAMESPACE] = ENFORCED
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "enforce.auditlock.io",
                "clientConfig": _client_config(ca_pem, VALIDATE_PATH, url=url, service=service),
                "failurePolicy": "Fail",
                **common,
                "namespaceSelector": enforced_selector,
            }
        ],
    }
    return mutating, validating
