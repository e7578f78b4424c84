"""The rig fails clearly and quickly: a missing binary, a taken port or a server that
never comes up give one error naming what failed and its log, and leave nothing running.

These start the real etcd (its own, not the session's control plane); the API server is
replaced by small scripts where the test is about the API server misbehaving."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers import kube_controlplane
from tests.servers.kube_assets import REPO_ROOT, KubeRigError, find_binary
from tests.servers.kube_controlplane import KubeControlPlane


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def real_etcd(monkeypatch: pytest.MonkeyPatch) -> Path:
    try:
        etcd = find_binary("etcd")
    except KubeRigError as err:
        pytest.fail(str(err), pytrace=False)
    monkeypatch.setenv("AUDITLOCK_ETCD", str(etcd))
    return etcd


def _start_fails(tmp_path: Path, **options: Any) -> tuple[KubeControlPlane, str]:
    """A control plane whose start must fail with KubeRigError, and the error's message."""
    plane = KubeControlPlane(tmp_path / "plane", **options)
    with pytest.raises(KubeRigError) as raised:
        plane.start()
    return plane, str(raised.value)


def test_missing_binary_names_where_it_looked_and_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITLOCK_KUBE_APISERVER", str(tmp_path / "nope" / "kube-apiserver"))
    _, message = _start_fails(tmp_path)
    assert "kube-apiserver not found" in message
    assert str(tmp_path / "nope" / "kube-apiserver") in message
    assert "make bootstrap" in message and "KUBEBUILDER_ASSETS" in message


def test_server_that_exits_at_start_reports_its_exit_code_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_etcd: Path
) -> None:
    broken = _script(tmp_path, "kube-apiserver", "echo 'E1129 flag --nonsense is bad' >&2; exit 3")
    monkeypatch.setenv("AUDITLOCK_KUBE_APISERVER", str(broken))
    plane, message = _start_fails(tmp_path, start_timeout=30)
    assert "kube-apiserver exited with code 3" in message
    assert str(plane.log_paths["kube-apiserver"]) in message
    assert "flag --nonsense is bad" in message  # the log's tail is in the error
    assert plane.processes == []  # etcd was stopped too


def test_server_that_never_gets_ready_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_etcd: Path
) -> None:
    pid_file = tmp_path / "pid"
    hanging = _script(tmp_path, "kube-apiserver", f"echo $$ > {pid_file}; exec sleep 600")
    monkeypatch.setenv("AUDITLOCK_KUBE_APISERVER", str(hanging))
    began = time.monotonic()
    plane, message = _start_fails(tmp_path, start_timeout=3)
    assert time.monotonic() - began < 30
    assert "kube-apiserver did not become ready" in message and "within 3 s" in message
    assert str(plane.log_paths["kube-apiserver"]) in message
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_port_in_use_is_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_etcd: Path
) -> None:
    # etcd fails first, so the API server is never started; any executable will do.
    monkeypatch.setenv("AUDITLOCK_KUBE_APISERVER", str(_script(tmp_path, "apiserver", "exit 9")))
    # Someone else holds the port the kernel offered us (a race with another process).
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(kube_controlplane, "free_port", lambda: taken)
        plane, message = _start_fails(tmp_path, start_timeout=30)
    assert "etcd could not bind its port 3 times" in message
    assert str(plane.log_paths["etcd"]) in message
    assert plane.processes == []


INNER_FAILING_TEST = """
from kubernetes import client


def test_reads_a_secret_then_fails(kube_apiserver):
    ns = kube_apiserver.create_namespace("inner-ns")
    with kube_apiserver.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(ns, {"metadata": {"name": "marker-4711"}})
        core.read_namespaced_secret("marker-4711", ns)
    raise AssertionError("on purpose")
"""


def test_failed_test_report_carries_the_server_logs_of_that_test(tmp_path: Path) -> None:
    # A separate pytest run (its own control plane) whose only test fails on purpose.
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER_FAILING_TEST)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(test_file),
            "-p",
            "tests.servers.kube",
            "-p",
            "no:cacheprovider",
            f"--rootdir={tmp_path}",
            f"--basetemp={tmp_path / 'inner-tmp'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "AssertionError: on purpose" in out
    assert "kube-apiserver log (tail, call)" in out
    audit_section = out[out.index("audit log (tail, call)") :]
    # The audit log part shows what the API server recorded during the test.
    assert '"name":"marker-4711"' in audit_section
    assert str(tmp_path / "inner-tmp") in audit_section  # the path of the full log


STARTER = """
import sys, time
from pathlib import Path
from tests.servers.kube_controlplane import KubeControlPlane
plane = KubeControlPlane(Path(sys.argv[1]))
plane.start()
print(" ".join(str(p.popen.pid) for p in plane.processes), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def test_servers_die_with_a_killed_test_process(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path / "plane")],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        pids = [int(p) for p in starter.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        starter.kill()  # SIGKILL: no teardown runs in the test process
        starter.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"servers still running: {pids}"
        time.sleep(0.2)
