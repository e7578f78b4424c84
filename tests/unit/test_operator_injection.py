"""Injection and enforcement webhooks as pure functions (the integration tests use the API)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from auditlock.operator import admission, injection
from auditlock.operator import names as n
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.sidecar_config import config_map_data, render
from auditlock.policy import parse_spec

NATIVE = injection.InjectionSettings(
    cluster="test", image="auditlock/sidecar:test", native_sidecar=True
)
CLASSIC = injection.InjectionSettings(
    cluster="test", image="auditlock/sidecar:test", native_sidecar=False
)


def _entry(name: str = "payments", enforcement: str = "optional", **extra: Any) -> PolicyEntry:
    spec = parse_spec(
        {
            "selector": {"matchLabels": {"app": "payments"}},
            "destination": {"s3": {"bucket": "audit", "credentialsSecret": {"name": "aws"}}},
            "retention": {"days": 30},
            "enforcement": enforcement,
            **extra,
        }
    )
    _, digest = config_map_data(spec)
    return PolicyEntry("shop", name, "uid-1", 1, spec, digest, "2026-01-01T00:00:00Z")


def _pod(labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "api-", "labels": labels or {"app": "payments"}, **meta},
        "spec": {
            "containers": [{"name": "app", "image": "app:1"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def _review(pod: Any, uid: str = "u-1") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": pod,
            },
        }
    ).encode()


def _registry(*entries: PolicyEntry) -> PolicyRegistry:
    registry = PolicyRegistry()
    for entry in entries:
        registry.put(entry)
    return registry


def _patched(answer: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    return injection.apply_patch(pod, patch)


def test_native_sidecar_injection_has_everything() -> None:
    entry = _entry()
    pod = _pod()
    answer = admission.mutate(_review(pod), _registry(entry), NATIVE)
    assert answer["response"]["allowed"] is True
    mutated = _patched(answer, pod)
    [collector] = mutated["spec"]["initContainers"]
    assert collector["name"] == n.COLLECTOR_CONTAINER
    assert collector["restartPolicy"] == "Always"
    assert [c["name"] for c in mutated["spec"]["containers"]] == ["app"]
    sc = collector["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e for e in collector["env"]}
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["AUDITLOCK_SIDECAR__STREAM__ID"]["value"] == "test_$(POD_NAMESPACE)_$(POD_NAME)"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "aws"
    assert collector["livenessProbe"]["httpGet"]["port"] == n.HEALTH_PORT
    assert collector["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    volumes = {v["name"]: v for v in mutated["spec"]["volumes"]}
    # Per-pod keys, the default: a projected token proves the pod; no key volume.
    assert set(volumes) == {
        "data",
        n.VOLUME_CERTIFICATE_TOKEN,
        n.VOLUME_CONFIG,
        n.VOLUME_SPOOL,
        n.VOLUME_TMP,
    }
    [source] = volumes[n.VOLUME_CERTIFICATE_TOKEN]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == n.CERTIFICATE_AUDIENCE
    assert "AUDITLOCK_SIDECAR__STREAM__CERTIFICATE_URL" in env
    assert volumes[n.VOLUME_SPOOL]["emptyDir"]["sizeLimit"] == "256Mi"
    annotations = mutated["metadata"]["annotations"]
    assert annotations[n.ANNOTATION_POLICY] == "payments"
    assert annotations[n.ANNOTATION_CONFIG_HASH] == entry.config_hash
    assert mutated["metadata"]["labels"][n.LABEL_POLICY] == "payments"


def test_key_is_mounted_only_into_the_collector() -> None:
    pod = _pod()
    shared = _entry(signing="shared")  # the policy's key Secret, mounted as a volume
    mutated = _patched(admission.mutate(_review(pod), _registry(shared), CLASSIC), pod)
    app, collector = mutated["spec"]["containers"]
    assert "restartPolicy" not in collector
    assert "volumeMounts" not in app
    assert n.VOLUME_KEY in {m["name"] for m in collector["volumeMounts"]}
    volumes = {v["name"]: v for v in mutated["spec"]["volumes"]}
    assert volumes[n.VOLUME_KEY]["secret"]["secretName"] == "auditlock-key-payments"


def test_mutation_is_idempotent() -> None:
    registry = _registry(_entry())
    pod = _pod()
    once = _patched(admission.mutate(_review(pod), registry, NATIVE), pod)
    again = admission.mutate(_review(once), registry, NATIVE)
    assert again["response"] == {"uid": "u-1", "allowed": True}


def test_unselected_pod_is_untouched() -> None:
    answer = admission.mutate(_review(_pod({"app": "other"})), _registry(_entry()), NATIVE)
    assert answer["response"] == {"uid": "u-1", "allowed": True}


def test_opt_out_is_honoured_unless_required() -> None:
    pod = _pod(annotations={n.ANNOTATION_INJECT: "false"})
    optional = admission.mutate(_review(pod), _registry(_entry()), NATIVE)
    assert "patch" not in optional["response"]
    required = admission.mutate(_review(pod), _registry(_entry(enforcement="required")), NATIVE)
    assert "patch" in required["response"]


def test_validation_refuses_required_pod_without_collector_naming_the_policy() -> None:
    registry = _registry(_entry("pci", enforcement="required"))
    denied = admission.validate(_review(_pod()), registry, NATIVE)
    assert denied["response"]["allowed"] is False
    assert "AuditPolicy pci (enforcement: required)" in denied["response"]["status"]["message"]
    pod = _pod()
    mutated = _patched(admission.mutate(_review(pod), registry, NATIVE), pod)
    assert admission.validate(_review(mutated), registry, NATIVE)["response"]["allowed"] is True
    optional = _registry(_entry())
    assert admission.validate(_review(_pod()), optional, NATIVE)["response"]["allowed"] is True


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"request": {"uid": "x", "namespace": "shop", "kind": {"kind": "Pod"}, "object": 5}}',
        b'{"request": {"uid": "x", "namespace": "shop", "kind": {"kind": "Pod"},'
        b' "object": {"metadata": {"labels": {"a": 1}}, "spec": {}}}}',
    ],
)
def test_unparseable_requests_fail_open_or_closed_by_enforcement(body: bytes) -> None:
    stats = admission.AdmissionStats()
    open_answer = admission.mutate(body, _registry(_entry()), NATIVE, stats)
    assert open_answer["response"]["allowed"] is True
    assert "ignored a request" in open_answer["response"]["warnings"][0]
    closed = admission.validate(body, _registry(_entry(enforcement="required")), NATIVE, stats)
    assert closed["response"]["allowed"] is False
    assert "enforcement: required" in closed["response"]["status"]["message"]
    assert stats.counts[("mutate", "allowed-unparseable")] == 1
    assert stats.counts[("validate", "denied-unparseable")] == 1


def test_oldest_policy_injects_when_two_select() -> None:
    old = _entry("a-old")
    new = PolicyEntry("shop", "b-new", "u2", 1, old.spec, "other", "2027-01-01T00:00:00Z")
    pod = _pod()
    mutated = _patched(admission.mutate(_review(pod), _registry(new, old), NATIVE), pod)
    assert mutated["metadata"]["annotations"][n.ANNOTATION_POLICY] == "a-old"


def test_rendered_config_is_valid_for_the_sidecar() -> None:
    config_mod = pytest.importorskip("auditlock.sidecar.config")
    spec = _entry(
        filters={"exclude": [{"field": "actor.name", "values": ["system:kube-proxy"]}]},
        redaction={"fields": ["details.password"]},
        delivery={"batchSize": 50, "maxDelayMs": 200, "spoolLimitMiB": 64},
    ).spec
    rendered = render(spec, cluster="prod-eu")
    config = config_mod.config_from_dict(
        rendered, environ={"AUDITLOCK_SIDECAR__STREAM__ID": "shop_api-1"}
    )
    assert config.stream.id == "shop_api-1"
    assert config.destination.url == "s3://audit"
    assert config.delivery.batch_max_events == 50
    assert config.delivery.max_delay_seconds == 0.2
    # 64 MiB emptyDir: 8 MiB for the file being written, 8 MiB for the id log and state.
    assert (config.spool.max_bytes, config.spool.segment_bytes) == (48 << 20, 8 << 20)
    assert config.sources.forward.chunk_memory == 63550
    assert config.pipeline.redact == ["details.password"]
    assert config.source.cluster == "prod-eu"


@pytest.mark.parametrize("limit", [16, 17, 20, 31, 64, 100, 128, 256, 1000, 65536])
def test_a_rendered_spool_holds_the_largest_frame_and_fits_its_volume(limit: int) -> None:
    from auditlock.sidecar.config import config_from_dict

    spec = _entry(delivery={"spoolLimitMiB": limit}).spec
    config = config_from_dict(render(spec), environ={})
    spool = config.spool
    assert spool.max_bytes >= config.sources.forward.max_frame_bytes
    assert spool.max_bytes >= config.sources.http.max_body_bytes
    # records + the released part of the file being written + the chunk-id log (twice
    # chunk_memory lines of 33 bytes) stay within the emptyDir's sizeLimit.
    log_bytes = 2 * config.sources.forward.chunk_memory * 33
    assert spool.max_bytes + spool.segment_bytes + log_bytes <= limit * 1024 * 1024


def test_a_spool_smaller_than_a_frame_is_refused_with_the_reason() -> None:
    with pytest.raises(Exception, match="greater than or equal to 16") as refused:
        _entry(delivery={"spoolLimitMiB": 8})
    assert "spoolLimitMiB" in str(refused.value)


def test_config_hash_changes_with_the_spec() -> None:
    a = _entry().spec
    b = parse_spec({**a.model_dump(by_alias=True, exclude_none=True), "retention": {"days": 31}})
    assert config_map_data(a)[1] != config_map_data(b)[1]
    assert config_map_data(a)[1] == config_map_data(a)[1]


def test_s3_location_reaches_the_collector_and_the_operators_check_alike() -> None:
    from auditlock.operator.destination import open_options

    spec = parse_spec(
        {
            "selector": {"matchLabels": {"app": "payments"}},
            "destination": {
                "s3": {
                    "bucket": "audit",
                    "endpoint": "http://seaweedfs.storage:8333",
                    "region": "us-east-1",
                    "addressingStyle": "path",
                }
            },
            "retention": {"days": 30},
        }
    )
    where = {
        "endpoint_url": "http://seaweedfs.storage:8333",
        "region": "us-east-1",
        "addressing_style": "path",
    }
    assert render(spec)["destination"]["options"] == where
    assert {k: v for k, v in open_options(spec, None).items() if k != "retry"} == where
    default = parse_spec({**spec.model_dump(by_alias=True, exclude_none=True),
                          "destination": {"s3": {"bucket": "audit"}}})  # fmt: skip
    assert "addressing_style" not in render(default)["destination"]["options"]
    with pytest.raises(Exception, match="addressingStyle"):
        parse_spec({"selector": {}, "destination": {"s3": {"bucket": "audit",
                    "addressingStyle": "dns"}}, "retention": {"days": 1}})  # fmt: skip
