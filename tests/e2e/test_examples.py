"""The shipped examples work as shipped: examples/sample-app.yaml's code, run as a real
process with its real fluent-logger client, beside a real collector configured from an
example AuditPolicy exactly as the operator renders it (operator/sidecar_config.py), in
a network namespace of their own like a pod's. The test reads what was stored, not a
PASS line: categories and counts, redaction, that the card number's bytes are in no
stored object, and that the kind quickstart's `auditlock count` check passes on it."""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.ledger.keys import generate, private_pem, public_pem
from auditlock.operator.names import KEY_FILE, PUBLIC_KEY_FILE, SPOOL_MOUNT
from auditlock.operator.sidecar_config import render_yaml
from auditlock.policy.model import parse_spec
from auditlock.policy.paths import MARKER
from tests.helpers.deploy import quickstart_count_args
from tests.servers.sidecar import cli_verify, ledger_events, open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CARD = b"4111111111111111"
ROUNDS = 10  # the app's requests: one access event each, a data event every fifth


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _sample_app() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in _docs(EXAMPLES / "sample-app.yaml")}
    return docs["ConfigMap"], docs["Deployment"]


def _stored_bytes(directory: Path) -> dict[Path, bytes]:
    """Every file under `directory`, gzip members decompressed (segments may be .gz)."""
    found: dict[Path, bytes] = {}
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found[path] = gzip.decompress(data) if path.suffix == ".gz" else data
    return found


def _sample_app_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The sample app's command and env, its ConfigMap volume projected under tmp_path."""
    config_map, deployment = _sample_app()
    app_dir = tmp_path / "app"  # the ConfigMap volume, mounted at /app in the Deployment
    app_dir.mkdir()
    for name, text in config_map["data"].items():
        (app_dir / name).write_text(text)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (mount,) = container["volumeMounts"]
    command = [
        sys.executable if part == "python" else part.replace(mount["mountPath"], str(app_dir))
        for part in container["command"]
    ]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    return command, {**env, "EMIT_INTERVAL_SECONDS": "0", "EMIT_COUNT": str(ROUNDS)}


def _run_pod(
    tmp_path: Path, spec: dict[str, Any], records: int, command: list[str], app_env: dict[str, str]
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Collector (config rendered from `spec`) + an app in one network namespace."""
    key_dir = tmp_path / "key"  # the key Secret's volume
    key_dir.mkdir()
    key = generate()
    (key_dir / KEY_FILE).write_bytes(private_pem(key))
    (key_dir / PUBLIC_KEY_FILE).write_bytes(public_pem(key.public_key()))
    # No operator here to certify a per-pod key (tests/e2e/test_chain.py runs that path):
    # the collector signs with a key of its own from a mounted file, as a shared key.
    rendered = render_yaml(parse_spec({**spec, "signing": "shared"}), cluster="kind-auditlock")
    config_path = tmp_path / "sidecar.yaml"
    config_path.write_text(rendered)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOCK_SIDECAR__")}
    env.update(app_env)
    env.update(
        {
            # What the injection webhook sets from the downward API, and where the pod's
            # volumes are on this machine.
            "AUDITLOCK_SIDECAR__STREAM__ID": "auditlock-demo_orders-7f9c-abcde",
            "AUDITLOCK_SIDECAR__SOURCE__NAMESPACE": "auditlock-demo",
            "AUDITLOCK_SIDECAR__SOURCE__POD": "orders-7f9c-abcde",
            "AUDITLOCK_SIDECAR__SPOOL__DIR": str(tmp_path / "spool"),
            "AUDITLOCK_SIDECAR__STREAM__SIGNING_KEY_FILE": str(key_dir / KEY_FILE),
        }
    )
    health_port = yaml.safe_load(rendered)["health"]["port"]
    result = subprocess.run(
        [
            "unshare",
            "--net",
            sys.executable,
            "-m",
            "tests.e2e.netns_pod",
            "--config",
            str(config_path),
            "--health-port",
            str(health_port),
            "--records",
            str(records),
            "--",
            *command,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no summary from the pod:\n{result.stdout}\n{result.stderr}"
    return json.loads(lines[-1]), result


@pytest.mark.parametrize("policy_file", ["auditpolicy-s3.yaml", "auditpolicy-file.yaml"])
def test_sample_app_events_are_stored_as_the_example_policy_says(
    policy_file: str, tmp_path: Path
) -> None:
    (policy,) = _docs(EXAMPLES / policy_file)
    spec = copy.deepcopy(policy["spec"])
    _, deployment = _sample_app()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    # Everything as shipped but where the trail goes: the S3 example's bucket is in the
    # kind cluster, and the file example's path is inside the pod's spool volume.
    if "file" in spec["destination"]:
        store = (
            tmp_path / "spool" / Path(spec["destination"]["file"]["path"]).relative_to(SPOOL_MOUNT)
        )
    else:
        store = tmp_path / "store"
    spec["destination"] = {"file": {"path": str(store)}}
    data_rounds = ROUNDS // 5
    command, app_env = _sample_app_command(tmp_path)
    summary, result = _run_pod(tmp_path, spec, ROUNDS + data_rounds, command, app_env)
    detail = f"{summary}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert summary["app"] == 0 and summary["collector"] == 0, detail
    assert summary["rejected"] == 0 and summary["filtered"] == 0, detail
    assert summary["received"] == ROUNDS + data_rounds, detail

    events = [line["event"] for line in ledger_events(open_store(f"file://{store}"))]
    assert Counter(e["category"] for e in events) == {"access": ROUNDS, "data": data_rounds}
    for event in events:
        assert event["actor"]["kind"] == "user" and event["actor"]["name"]
        assert event["target"]["resource"] == "orders"
        assert event["source"]["pod"] == "orders-7f9c-abcde"
        assert event["details"]["intake"]["tag"] == f"orders.{event['category']}"
    data = [e for e in events if e["category"] == "data"]
    for event in data:
        assert event["details"]["field"] == "status"
        assert event["details"]["attributes"] == {"card_number": MARKER}

    stored = _stored_bytes(store)
    assert any(name.suffix in (".jsonl", ".gz") for name in stored)
    assert not [p for p, b in stored.items() if CARD in b], "card number stored"
    assert any(MARKER.encode() in b for b in stored.values())
    # Redaction runs before the spool: the pod's disk never held it either.
    assert not [p for p, b in _stored_bytes(tmp_path / "spool").items() if CARD in b]

    verified = cli_verify(f"file://{store}", tmp_path / "key" / PUBLIC_KEY_FILE)
    assert verified is not None and verified.returncode == 0, verified and verified.stdout
    # The quickstart's event check, with its own arguments, on this real trail.
    counted = subprocess.run(
        [sys.executable, "-m", "auditlock", "count", f"file://{store}", *quickstart_count_args()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert counted.returncode == 0, counted.stdout + counted.stderr
    assert f"  access         {ROUNDS}\n" in counted.stdout
    assert f"  data           {data_rounds}\n" in counted.stdout


def _readme_block(language: str, marker: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def test_readme_policy_and_client_snippets_store_what_they_say(tmp_path: Path) -> None:
    """README's AuditPolicy and its fluent-logger snippet, run as written (only the
    destination is local): the event is stored, nothing rejected."""
    policy = yaml.safe_load(_readme_block("yaml", "kind: AuditPolicy"))
    spec = policy["spec"]
    store = tmp_path / "store"
    spec["destination"] = {"file": {"path": str(store)}}
    snippet = _readme_block("python", "FluentSender")
    app = tmp_path / "readme_snippet.py"
    app.write_text(snippet + "log.close()\n")
    summary, result = _run_pod(tmp_path, spec, 1, [sys.executable, str(app)], {})
    detail = f"{summary}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert summary["app"] == 0 and summary["collector"] == 0, detail
    assert (summary["received"], summary["rejected"]) == (1, 0), detail
    (line,) = ledger_events(open_store(f"file://{store}"))
    event = line["event"]
    assert (event["category"], event["action"]) == ("data", "order.refund")
    assert event["actor"] == {"kind": "user", "name": "alice", "ip": "10.1.2.3"}
    assert event["correlation"] == {"request_id": "req-9f2"}
