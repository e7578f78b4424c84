"""kind-config.yaml, the quickstart script and its docs: they parse, agree with each other
and with the chart, and every path they reference exists. (kind cannot run here: there is
no container engine; this is what can be checked without one.)"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.helpers.deploy import operator_routes, quickstart_count_args

ROOT = Path(__file__).resolve().parents[2]
KIND_CONFIG = ROOT / "kind-config.yaml"
SCRIPT = ROOT / "scripts" / "kind-quickstart.sh"
DOC = ROOT / "docs" / "quickstart-kind.md"
AUDIT_MOUNT_DIR = "/etc/kubernetes/auditlock"


def _kind() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(KIND_CONFIG.read_text())
    return data


def _control_plane() -> dict[str, Any]:
    nodes = [n for n in _kind()["nodes"] if n["role"] == "control-plane"]
    assert len(nodes) == 1
    node: dict[str, Any] = nodes[0]
    return node


def _patches() -> dict[str, dict[str, Any]]:
    """kubeadm ClusterConfiguration patches by apiVersion."""
    patches = [yaml.safe_load(p) for p in _control_plane()["kubeadmConfigPatches"]]
    assert all(p["kind"] == "ClusterConfiguration" for p in patches)
    return {p["apiVersion"]: p for p in patches}


def _api_server_args(patch: dict[str, Any]) -> dict[str, str]:
    extra = patch["apiServer"]["extraArgs"]
    if isinstance(extra, list):  # kubeadm v1beta4: [{name, value}]
        return {a["name"]: a["value"] for a in extra}
    return dict(extra)  # v1beta3: a map


def _mounted_files() -> dict[str, Path]:
    """containerPath -> host path (relative paths resolve from the repository root)."""
    return {m["containerPath"]: ROOT / m["hostPath"] for m in _control_plane()["extraMounts"]}


def _audit_kubeconfig() -> dict[str, Any]:
    path = _mounted_files()[f"{AUDIT_MOUNT_DIR}/audit-webhook.kubeconfig"]
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_kind_config_is_a_kind_cluster() -> None:
    config = _kind()
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"


def test_every_extra_mount_exists_and_is_read_only() -> None:
    for container_path, host_path in _mounted_files().items():
        assert host_path.is_file(), f"{container_path} mounts missing {host_path}"
        assert container_path.startswith(AUDIT_MOUNT_DIR + "/")
    assert all(m.get("readOnly") for m in _control_plane()["extraMounts"])


def test_both_kubeadm_versions_wire_the_same_audit_flags() -> None:
    patches = _patches()
    assert set(patches) == {"kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"}
    v3, v4 = (_api_server_args(patches[v]) for v in sorted(patches))
    assert v3 == v4
    mounted = _mounted_files()
    assert v3["audit-policy-file"] in mounted
    assert v3["audit-webhook-config-file"] in mounted
    assert v3["audit-webhook-version"] == "audit.k8s.io/v1"
    for patch in patches.values():
        # The static pod sees the node's directory only through an extraVolume.
        volumes = patch["apiServer"]["extraVolumes"]
        assert any(
            v["hostPath"] == AUDIT_MOUNT_DIR and v["mountPath"] == AUDIT_MOUNT_DIR for v in volumes
        )


def test_audit_policy_records_what_the_operator_captures() -> None:
    path = _mounted_files()[f"{AUDIT_MOUNT_DIR}/audit-policy.yaml"]
    policy = yaml.safe_load(path.read_text())
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    levels: dict[str, str] = {}
    for rule in policy["rules"]:
        for group in rule.get("resources", []):
            for resource in group.get("resources", ["*"]):
                levels.setdefault(resource, rule["level"])
    for sub in ("pods/exec", "pods/attach", "pods/portforward"):
        assert levels.get(sub) in ("Metadata", "Request"), sub
    assert levels["rolebindings"] in ("Metadata", "Request")
    # Never Request/RequestResponse for Secrets: that would copy secret values into the
    # audit stream.
    assert levels["secrets"] == "Metadata"
    assert levels["configmaps"] == "Metadata"
    assert policy["rules"][-1] == {"level": "None"}, "everything else is not audited"


def test_audit_webhook_points_at_the_charts_audit_service_ip() -> None:
    config = _audit_kubeconfig()
    assert config["kind"] == "Config"
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.scheme == "https"
    ip = ipaddress.ip_address(server.hostname or "")
    subnet = ipaddress.ip_network(_kind()["networking"]["serviceSubnet"])
    assert ip in subnet, "a ClusterIP must be inside the service CIDR"
    # The quickstart installs the chart with the same fixed ClusterIP.
    script = SCRIPT.read_text()
    assert f'AUDIT_CLUSTER_IP="{ip}"' in script
    assert 'auditIntake.clusterIP="$AUDIT_CLUSTER_IP"' in script
    # The path is the operator's audit intake route.
    assert ("POST", server.path) in operator_routes()
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    current = contexts[config["current-context"]]
    assert current["cluster"] in {c["name"] for c in config["clusters"]}
    users = {u["name"]: u["user"] for u in config["users"]}
    # The operator refuses /audit without the token the chart was installed with.
    token = users[current["user"]]["token"]
    assert f'AUDIT_TOKEN="{token}"' in script
    assert 'auditIntake.token="$AUDIT_TOKEN"' in script


def test_quickstart_script_parses() -> None:
    bash = shutil.which("bash")
    assert bash
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)
    assert SCRIPT.stat().st_mode & 0o111, "the script is executable"


def _repo_paths_in_script() -> set[str]:
    text = SCRIPT.read_text()
    found = set(
        re.findall(r"(?<![\w/$.-])((?:examples|charts|operator|sidecar|scripts)/[\w./-]+)", text)
    )
    found |= set(re.findall(r"(?<![\w/])(kind-config\.yaml)", text))
    return {p.rstrip(".") for p in found}


def test_every_path_the_script_uses_exists() -> None:
    paths = _repo_paths_in_script()
    assert {"kind-config.yaml", "charts/auditlock", "examples/sample-app.yaml"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"scripts/kind-quickstart.sh names missing paths: {missing}"


def test_every_link_and_path_in_the_doc_exists() -> None:
    text = DOC.read_text()
    links = re.findall(r"\]\((\.\./[^)#]+)\)", text)
    assert links
    missing = [link for link in links if not (DOC.parent / link).resolve().exists()]
    code_paths = re.findall(
        r"(?<![\w/.-])((?:examples|charts|operator|sidecar|scripts)/[\w./-]*\w)", text
    )
    missing += [p for p in code_paths if not (ROOT / p).exists()]
    assert not missing, f"docs/quickstart-kind.md names missing paths: {missing}"


def test_doc_and_script_build_the_images_the_chart_is_told_to_use() -> None:
    script = SCRIPT.read_text()
    for image in ("operator", "sidecar"):
        assert f'docker build -f {image}/Dockerfile -t "auditlock/{image}:$TAG" .' in script
        assert f"--set image.{image}.repository=auditlock/{image}" in script
        assert f"auditlock/{image}:dev" in DOC.read_text()
    assert "kind load docker-image" in script


def test_demo_s3_endpoint_is_the_fixed_service_ip_everywhere() -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "demo" / "seaweedfs.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "Service")
    ip = ipaddress.ip_address(service["spec"]["clusterIP"])
    assert ip in ipaddress.ip_network(_kind()["networking"]["serviceSubnet"])
    server = urlsplit(_audit_kubeconfig()["clusters"][0]["cluster"]["server"]).hostname
    assert str(ip) != server, "two Services cannot share a ClusterIP"
    endpoint = f"http://{ip}:{service['spec']['ports'][0]['port']}"
    policy = yaml.safe_load((ROOT / "examples" / "auditpolicy-s3.yaml").read_text())
    assert policy["spec"]["destination"]["s3"]["endpoint"] == endpoint
    job = yaml.safe_load((ROOT / "examples" / "demo" / "create-bucket-job.yaml").read_text())
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["S3_ENDPOINT"] == endpoint
    assert f'S3_ENDPOINT="{endpoint}"' in SCRIPT.read_text()
    assert f"endpoint_url={endpoint}" in DOC.read_text()


def test_verify_step_uses_the_policys_published_key_and_the_real_cli() -> None:
    """The key comes from the policy's status (the root key with per-pod keys, the
    default), not from a Secret of the audited namespace: there is none."""
    from auditlock.cli.main import build_parser
    from auditlock.policy.model import AuditPolicyStatus

    script = SCRIPT.read_text()
    policy = yaml.safe_load((ROOT / "examples" / "auditpolicy-s3.yaml").read_text())
    assert policy["spec"].get("signing", "perPod") == "perPod"
    name = policy["metadata"]["name"]
    assert "publicKey" in AuditPolicyStatus.model_json_schema(by_alias=True)["properties"]
    for text in (script, DOC.read_text()):
        assert "get auditpolicy -n" in text and f" {name} " in text
        assert "jsonpath='{.status.publicKey}'" in text
        assert "auditlock-key-" not in text
    s3 = policy["spec"]["destination"]["s3"]
    url = f"s3://{s3['bucket']}/{s3['prefix']}"
    assert f'trail="{url}?endpoint=' in script and '"$AUDITLOCK" verify "$trail"' in script
    args = build_parser().parse_args(["verify", url, "--public-key", "key.pem"])
    assert callable(args.func)


def sample_app_categories() -> set[str]:
    """The categories examples/sample-app.yaml's code emits (the tag of each emit call)."""
    import ast

    docs = yaml.safe_load_all((ROOT / "examples" / "sample-app.yaml").read_text())
    config_map = next(d for d in docs if d and d["kind"] == "ConfigMap")
    tree = ast.parse(config_map["data"]["emit.py"])
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "emit"
        and isinstance(node.args[0], ast.Constant)
    }


def test_quickstart_checks_every_category_the_sample_app_sends_after_verify() -> None:
    from auditlock.cli.main import build_parser

    script = SCRIPT.read_text()
    args = build_parser().parse_args(["count", "s3://b/p", *quickstart_count_args()])
    assert set(args.require) == sample_app_categories() == {"access", "data"}
    assert callable(args.func)
    verify_at = script.index('"$AUDITLOCK" verify "$trail"')
    assert verify_at < script.index('"$AUDITLOCK" count "$trail"')
    for command in ("verify", "count"):
        line = next(x for x in script.splitlines() if f'"$AUDITLOCK" {command} ' in x)
        assert line.rstrip().endswith("||"), f"a failing {command} must fail the script"
    assert 'trail="s3://auditlock-demo/orders?endpoint=' in script
