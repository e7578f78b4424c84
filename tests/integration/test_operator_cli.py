"""`auditlock operator run` as a process (how the chart runs it) against the real API
server: it becomes ready, reconciles a policy, answers a webhook over TLS, and stops
cleanly and promptly on SIGTERM, even with a webhook connection kept alive (as the API
server keeps its own)."""

from __future__ import annotations

import http.client
import signal
import ssl
import time
import urllib.request
from pathlib import Path

from auditlock.ledger.keys import generate, private_pem
from tests.helpers.policies import create_ready_policy, file_spec, wait_for
from tests.servers.auditlock_child import auditlock_child
from tests.servers.auditlock_operator import post_pod_review
from tests.servers.kube_controlplane import KubeControlPlane, free_port


def _get(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return int(response.status)
    except OSError:
        return 0


def test_operator_process_serves_reconciles_and_stops_on_sigterm(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    pair = kube.issue_serving_cert("operator-cli")
    webhook_port, health_port = free_port(), free_port()
    log_path = tmp_path / "operator.log"
    root_key = tmp_path / "root.pem"  # as the chart mounts its root key Secret
    root_key.write_bytes(private_pem(generate()))
    args = [
        "operator", "run", f"--kubeconfig={kube.kubeconfig}",
        "--webhook-host=127.0.0.1", f"--webhook-port={webhook_port}",
        f"--tls-cert-file={pair.cert_path}", f"--tls-key-file={pair.key_path}",
        f"--health-port={health_port}", "--standalone",
        f"--collector=127.0.0.1:{free_port()}", "--refresh-seconds=5",
        f"--root-key-file={root_key}",
    ]  # fmt: skip
    with auditlock_child(args, log_path) as proc:
        wait_for(
            "operator /readyz",
            lambda: _get(f"http://127.0.0.1:{health_port}/readyz") == 200,
            timeout=30,
        )
        create_ready_policy(kube, kube_namespace, "cli", file_spec(tmp_path / "trail"), timeout=15)
        answer = post_pod_review(f"https://127.0.0.1:{webhook_port}", kube, kube_namespace,
                                 uid="u-cli")  # fmt: skip
        assert answer["uid"] == "u-cli" and "patch" in answer
        # The plain health port never serves the webhooks.
        assert _get(f"http://127.0.0.1:{health_port}/mutate-pods") in (404, 405, 0)
        # An idle keep-alive connection, like the API server's to its webhooks.
        context = ssl.create_default_context(cafile=str(kube.ca_path))
        idle = http.client.HTTPSConnection("127.0.0.1", webhook_port, context=context, timeout=5)
        idle.request("GET", "/healthz")
        idle.getresponse().read()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        # kopf waits 5 s for tasks it did not start (that connection's handler) unless the
        # webhook server is closed first (operator/handlers.py, stop_serving).
        stopped_in = time.monotonic() - started
        assert stopped_in < 4.5, f"SIGTERM took {stopped_in:.1f} s"
        idle.close()
    assert "Traceback" not in log_path.read_text(errors="replace")
