"""The webhook configurations the chart and the tests register."""

from __future__ import annotations

import base64

from auditlock.operator.webhook_config import webhook_configurations


def test_injection_fails_open_enforcement_fails_closed_only_where_required() -> None:
    mutating, validating = webhook_configurations(
        "auditlock",
        b"CA",
        service={"namespace": "auditlock", "name": "op", "port": 443},
        exclude_namespaces=["auditlock"],
    )
    inject = mutating["webhooks"][0]
    enforce = validating["webhooks"][0]
    assert inject["failurePolicy"] == "Ignore" and enforce["failurePolicy"] == "Fail"
    assert inject["clientConfig"]["service"]["path"] == "/mutate-pods"
    assert enforce["clientConfig"]["service"]["path"] == "/validate-pods"
    assert base64.b64decode(inject["clientConfig"]["caBundle"]) == b"CA"
    for hook in (inject, enforce):
        excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
        assert {"kube-system", "auditlock"} <= set(excluded)
        assert hook["rules"][0]["operations"] == ["CREATE"]
        assert hook["rules"][1]["resources"] == ["pods/ephemeralcontainers"]
        assert hook["rules"][1]["operations"] == ["UPDATE"]
        assert hook["rules"][2]["resources"] == ["pods"]
        assert hook["matchConditions"][0]["name"] == "create-debug-or-image-change"
        assert hook["sideEffects"] == "None" and hook["timeoutSeconds"] <= 10
    assert "matchLabels" not in inject["namespaceSelector"]
    assert enforce["namespaceSelector"]["matchLabels"] == {"auditlock.io/enforcement": "required"}
