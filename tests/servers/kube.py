"""pytest fixtures for the real Kubernetes control plane (see docs/testing.md).

- `kube_apiserver` (session): a started KubeControlPlane (tests/servers/kube_controlplane.py)
- `kube_namespace` (function): a fresh namespace with a `default` ServiceAccount and the
  `kube-root-ca.crt` ConfigMap, deleted after the test
- `kube_audit_receiver` (function): a KubeAuditReceiver (tests/servers/kube_audit.py)
  listening on the reserved audit port, collecting what the API server's audit webhook sends
- `kubectl_path`, `helm_path` (session): the binaries, without starting any server

When a test that used the control plane fails, the tail of the etcd, kube-apiserver and
audit logs written during that test is added to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.servers.kube_assets import KubeRigError, find_binary
from tests.servers.kube_audit import KubeAuditReceiver
from tests.servers.kube_controlplane import KubeControlPlane

# The running control plane of this session, for the report hook below.
_running: list[KubeControlPlane] = []
_OFFSETS_KEY = pytest.StashKey[dict[str, int]]()


def start_plane(workdir: Path, what: str = "Kubernetes test control plane") -> KubeControlPlane:
    """A started control plane in `workdir`, or one clear test failure (what failed,
    where its log is), not a traceback into urllib."""
    plane = KubeControlPlane(workdir)
    try:
        plane.start()
    except KubeRigError as err:
        pytest.fail(f"{what}: {err}", pytrace=False)
    return plane


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    """etcd + kube-apiserver on 127.0.0.1, started once per session."""
    plane = start_plane(tmp_path_factory.mktemp("kube"))
    _running.append(plane)
    try:
        yield plane
    finally:
        _running.remove(plane)
        plane.stop()


@pytest.fixture
def kube_namespace(kube_apiserver: KubeControlPlane) -> Iterator[str]:
    """A fresh namespace for one test; its name is the fixture's value."""
    name = kube_apiserver.create_namespace()
    try:
        yield name
    finally:
        kube_apiserver.delete_namespace(name)


@pytest.fixture
def kube_audit_receiver(kube_apiserver: KubeControlPlane) -> Iterator[KubeAuditReceiver]:
    """Audit events the API server sends while the test runs (plus possibly a few retried
    from just before: filter by namespace/name)."""
    receiver = KubeAuditReceiver(kube_apiserver).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _binary(name: str) -> Path:
    try:
        return find_binary(name)
    except KubeRigError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def kubectl_path() -> Path:
    return _binary("kubectl")


@pytest.fixture(scope="session")
def helm_path() -> Path:
    return _binary("helm")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Remember where the logs end now, so a failure report shows only this test's part.
    if _running:
        item.stash[_OFFSETS_KEY] = _running[0].log_offsets()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    fixtures = getattr(item, "fixturenames", ())
    if report.failed and _running and "kube_apiserver" in fixtures:
        since = item.stash.get(_OFFSETS_KEY, {})
        for name, text in _running[0].iter_log_tails(since):
            report.sections.append((f"{name} log (tail, {report.when})", text))
    return report
