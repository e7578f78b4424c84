"""A real Kubernetes control plane for tests: etcd + kube-apiserver on 127.0.0.1.

envtest style (controller-runtime): no scheduler, no kubelet, no controller-manager.
Pods stay Pending; tests read the admitted object from the API. What is real: the API
server's authentication, RBAC, admission chain (mutating/validating webhooks,
ServiceAccount, NamespaceLifecycle, ...), CRD schema validation, status subresources,
TokenRequest, resourceVersions, watches, and the audit pipeline.

The pytest fixtures are in tests/servers/kube.py; this module can also be used directly:

    with KubeControlPlane(Path("/tmp/kube")) as kube:
        with kube.api_client() as api: ...
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.servers.kube_assets import KubeRigError, find_binary
from tests.servers.kube_certs import CertPair, KubeTestCA, write_service_account_keys

AUDIT_POLICY_FILE = Path(__file__).with_name("kube_audit_policy.yaml")

# How long the API server may take to become ready (its warm start: docs/testing.md,
# "Times"); the margin is for a machine busy with other builds.
DEFAULT_START_TIMEOUT = float(os.environ.get("AUDITLOCK_KUBE_START_TIMEOUT", "90"))
# Audit batching: events reach the receiver at most this long after the request
# (the API server's default is 30 s, far too slow for a test).
AUDIT_BATCH_MAX_WAIT = "500ms"
# A failed audit batch (receiver not listening) is retried with this initial backoff,
# growing x1.5 for a few steps, then dropped; the default 10 s would keep retries going
# for over a minute after a test's receiver is gone.
AUDIT_INITIAL_BACKOFF = "250ms"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_PORT_IN_USE = "address already in use"
_START_ATTEMPTS = 3


def free_port() -> int:
    """A loopback TCP port that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return None


# Looked up once here: the child runs _die_with_parent between fork and exec, where it
# must not load libraries or allocate much (other threads of pytest may hold locks).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: the server is killed if the thread that started it dies without tearing it
    # down (e.g. pytest killed by a CI timeout), so no etcd/kube-apiserver is left.
    # SIGKILL, not SIGTERM: kube-apiserver's graceful shutdown can hang for minutes when
    # etcd dies at the same moment, and nothing here is worth a clean shutdown.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def tail(path: Path, lines: int = 40, start: int = 0) -> str:
    """The last `lines` lines of a log file from byte offset `start` on ('' if none)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    return "\n".join(_without_audit_retries(data.decode("utf-8", "replace")).splitlines()[-lines:])


def _without_audit_retries(log: str) -> str:
    # While no test listens on the audit port, every audit batch fails with an error line
    # followed by one line per event; keep the error line, drop the event list.
    kept = [
        line
        for line in log.splitlines()
        if line != "Impacted events:" and " AUDIT: id=" not in line
    ]
    return "\n".join(kept)


@dataclass
class ServerProcess:
    """One running server binary and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_start: int  # where this run's output begins (the log is kept across restarts)

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=grace)


def _start_process(name: str, argv: list[str], log_path: Path) -> ServerProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        start = log.tell()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The death signal follows the starting *thread*: only tie it to the main
            # thread, so a server started from a short-lived worker thread survives it.
            preexec_fn=(
                _die_with_parent if threading.current_thread() is threading.main_thread() else None
            ),
        )
    return ServerProcess(name, popen, log_path, start)


class KubeControlPlane:
    """etcd + kube-apiserver on loopback, with a throwaway CA and an admin token.

    Attributes (valid after `start()`):

    - `url`: the API server, `https://127.0.0.1:<port>`
    - `kubeconfig`: path of an admin kubeconfig (token auth, CA pinned)
    - `ca_path`, `ca_pem`, `ca_bundle_b64`: the CA that signed every certificate here;
      `ca_bundle_b64` goes into a webhook's `clientConfig.caBundle`
    - `admin_token`: bearer token of user `admin`, group `system:masters`
    - `version`: what `/version` reports, e.g. `v1.37.2`; `version_info` = (1, 37)
    - `audit_host`, `audit_port`, `audit_url`: where the API server sends audit events
      (`https://127.0.0.1:<audit_port>/audit`, batches of `audit.k8s.io/v1` EventList)
    - `log_paths`: log file per server (`etcd`, `kube-apiserver`, `audit` = the API
      server's own audit log file, handy to see what it would have sent)
    """

    def __init__(self, workdir: Path, *, start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir = workdir / "logs"
        self.processes: list[ServerProcess] = []
        self.admin_token = secrets.token_urlsafe(32)
        self.ca = KubeTestCA(workdir / "pki")
        self.ca_path = self.ca.cert_path
        self.ca_pem = self.ca.pem
        self.ca_bundle_b64 = base64.b64encode(self.ca_pem).decode()
        self._serving = self.ca.issue(
            "kube-apiserver",
            ["127.0.0.1", "localhost", "kubernetes.default.svc", "10.0.0.1"],
        )
        # Certificate for whoever receives the audit webhook (a test's aiohttp server).
        self.audit_receiver_cert = self.ca.issue("audit-receiver", ["127.0.0.1", "localhost"])
        self._sa_keys = write_service_account_keys(workdir / "pki")
        self.audit_host = "127.0.0.1"
        self.audit_port = free_port()
        self.audit_url = f"https://127.0.0.1:{self.audit_port}/audit"
        self.url = ""
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.version = ""
        self.version_info: tuple[int, int] = (0, 0)
        self.log_paths: dict[str, Path] = {
            "etcd": self.logs_dir / "etcd.log",
            "kube-apiserver": self.logs_dir / "kube-apiserver.log",
            "audit": self.logs_dir / "audit.log",
        }
        self.start_seconds = 0.0

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> KubeControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and the API server and wait until `/readyz` says ok. Retries with
        fresh ports if one was taken in between; raises KubeRigError otherwise."""
        etcd_bin = find_binary("etcd")
        apiserver_bin = find_binary("kube-apiserver")
        began = time.monotonic()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once(etcd_bin, apiserver_bin)
                self.start_seconds = time.monotonic() - began
                return
            except _PortTaken as taken:
                self.stop()
                if attempt == _START_ATTEMPTS:
                    raise KubeRigError(
                        f"{taken.server} could not bind its port {_START_ATTEMPTS} times "
                        f"({_PORT_IN_USE}); log: {taken.log_path}"
                    ) from None
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        # API server first: it would otherwise spend its shutdown retrying etcd.
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def _start_once(self, etcd_bin: Path, apiserver_bin: Path) -> None:
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        data_dir = self.workdir / f"etcd-data-{etcd_port}"
        etcd = _start_process(
            "etcd",
            [
                str(etcd_bin),
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                "--name=auditlock-test",
                f"--initial-cluster=auditlock-test={peer_url}",
                # Throwaway data: skipping fsync makes every write much faster.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.log_paths["etcd"],
        )
        self.processes.append(etcd)
        deadline = time.monotonic() + self.start_timeout
        self._wait_http(etcd, f"{etcd_url}/health", deadline, context=None, token=None)

        self.url = f"https://127.0.0.1:{api_port}"
        self._write_files()
        apiserver = _start_process(
            "kube-apiserver",
            [str(apiserver_bin), *self._apiserver_flags(api_port, etcd_url)],
            self.log_paths["kube-apiserver"],
        )
        self.processes.append(apiserver)
        self._wait_http(
            apiserver,
            f"{self.url}/readyz",
            deadline,
            context=self.client_ssl_context(),
            token=self.admin_token,
        )
        info = self.get_json("/version")
        self.version = str(info["gitVersion"])
        self.version_info = (int(info["major"]), int(str(info["minor"]).rstrip("+")))

    def _apiserver_flags(self, port: int, etcd_url: str) -> list[str]:
        pki = self.workdir / "pki"
        return [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service's endpoints may not point at loopback, and nothing
            # in-cluster needs them here.
            "--endpoint-reconciler-type=none",
            f"--secure-port={port}",
            f"--etcd-servers={etcd_url}",
            f"--tls-cert-file={self._serving.cert_path}",
            f"--tls-private-key-file={self._serving.key_path}",
            f"--client-ca-file={self.ca_path}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-account-key-file={self._sa_keys.cert_path}",
            f"--service-account-signing-key-file={self._sa_keys.key_path}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--allow-privileged=true",
            f"--audit-policy-file={AUDIT_POLICY_FILE}",
            f"--audit-webhook-config-file={self.workdir / 'audit-webhook.kubeconfig'}",
            "--audit-webhook-mode=batch",
            "--audit-webhook-version=audit.k8s.io/v1",
            f"--audit-webhook-batch-max-wait={AUDIT_BATCH_MAX_WAIT}",
            "--audit-webhook-batch-max-size=100",
            f"--audit-webhook-initial-backoff={AUDIT_INITIAL_BACKOFF}",
            f"--audit-log-path={self.log_paths['audit']}",
            "--audit-log-maxsize=50",
            "--audit-log-maxbackup=1",
            "--profiling=false",
            "--v=1",
        ]

    def _write_files(self) -> None:
        pki = self.workdir / "pki"
        # token,user,uid,"groups": system:masters is bound to cluster-admin by RBAC.
        (pki / "tokens.csv").write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        (pki / "tokens.csv").chmod(0o600)
        self.write_kubeconfig(self.kubeconfig, self.admin_token)
        audit = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "audit-receiver",
                    "cluster": {
                        "server": self.audit_url,
                        "certificate-authority": str(self.ca_path),
                    },
                }
            ],
            "users": [{"name": "kube-apiserver", "user": {}}],
            "contexts": [
                {
                    "name": "audit",
                    "context": {"cluster": "audit-receiver", "user": "kube-apiserver"},
                }
            ],
            "current-context": "audit",
        }
        (self.workdir / "audit-webhook.kubeconfig").write_text(yaml.safe_dump(audit))

    def _wait_http(
        self,
        proc: ServerProcess,
        url: str,
        deadline: float,
        *,
        context: ssl.SSLContext | None,
        token: str | None,
    ) -> None:
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not proc.running():
                log = tail(proc.log_path, start=proc.log_start)
                if _PORT_IN_USE in log:
                    raise _PortTaken(proc.name, proc.log_path)
                raise KubeRigError(
                    f"{proc.name} exited with code {proc.popen.returncode} while starting; "
                    f"log: {proc.log_path}\n--- last lines ---\n{log}"
                )
            request = urllib.request.Request(url)
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as err:
                last_error = f"HTTP {err.code}: {err.read()[-300:].decode('utf-8', 'replace')}"
            except (OSError, ssl.SSLError) as err:
                last_error = str(err)
            time.sleep(0.2)
        raise KubeRigError(
            f"{proc.name} did not become ready at {url} within {self.start_timeout:.0f} s "
            f"(last: {last_error}); log: {proc.log_path}\n--- last lines ---\n"
            f"{tail(proc.log_path, start=proc.log_start)}"
        )

    # -- clients --------------------------------------------------------------------

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context for clients of the API server (trusts the rig's CA)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def audit_ssl_context(self) -> ssl.SSLContext:
        """A server SSL context for the audit receiver on `audit_port` (certificate for
        127.0.0.1 signed by the rig's CA, which the API server trusts)."""
        return self.server_ssl_context(self.audit_receiver_cert)

    @staticmethod
    def server_ssl_context(pair: CertPair) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(pair.cert_path), str(pair.key_path))
        return ctx

    def issue_serving_cert(self, name: str, hosts: list[str] | None = None) -> CertPair:
        """A serving certificate for a test's webhook server, signed by the rig's CA
        (default SANs: 127.0.0.1 and localhost). Register the webhook with
        `clientConfig: {url: https://127.0.0.1:<port>/..., caBundle: ca_bundle_b64}`."""
        return self.ca.issue(name, hosts or ["127.0.0.1", "localhost"])

    def api_client(self, token: str | None = None) -> Any:
        """A ready `kubernetes.client.ApiClient` (admin unless `token` is given).
        Close it after use: `with kube.api_client() as api: CoreV1Api(api)...`."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.ssl_ca_cert = str(self.ca_path)
        config.verify_ssl = True
        config.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(config)

    def kopf_connection_info(self, token: str | None = None) -> Any:
        """`kopf.ConnectionInfo` for an in-process kopf operator's `@kopf.on.login`."""
        import kopf

        return kopf.ConnectionInfo(
            server=self.url,
            ca_path=str(self.ca_path),
            scheme="Bearer",
            token=token or self.admin_token,
            default_namespace="default",
        )

    def write_kubeconfig(self, path: Path, token: str) -> Path:
        """Write a kubeconfig for `token` (e.g. a ServiceAccount's) to `path`."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "auditlock-test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [
                {"name": "auditlock-test", "context": {"cluster": "auditlock-test", "user": "user"}}
            ],
            "current-context": "auditlock-test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def get_json(self, path: str, token: str | None = None) -> dict[str, Any]:
        """GET an API path (e.g. `/version`) and decode the JSON answer."""
        request = urllib.request.Request(self.url + path)
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        with urllib.request.urlopen(
            request, timeout=10, context=self.client_ssl_context()
        ) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def kubectl(
        self, *args: str, token: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this API server (admin unless `token` is given)."""
        kubeconfig = self.kubeconfig
        if token:
            kubeconfig = self.write_kubeconfig(
                self.workdir / f"token-{uuid.uuid4().hex[:8]}.kubeconfig", token
            )
        return subprocess.run(
            [str(find_binary("kubectl")), f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    # -- namespaces and service accounts --------------------------------------------

    def create_namespace(self, name: str | None = None) -> str:
        """Create a namespace the way a real cluster's controller-manager would leave it:
        with a `default` ServiceAccount (the ServiceAccount admission plugin refuses Pods
        without one) and the `kube-root-ca.crt` ConfigMap. Returns its name."""
        from kubernetes import client

        name = name or f"t-{uuid.uuid4().hex[:10]}"
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            core.create_namespaced_service_account(
                name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
            )
            core.create_namespaced_config_map(
                name,
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name="kube-root-ca.crt"),
                    data={"ca.crt": self.ca_pem.decode()},
                ),
            )
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and finalize it at once. There is no namespace controller
        here, so nothing empties it: the objects inside stay in etcd (harmless in a
        throwaway etcd), and without the finalize call it would stay Terminating."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            try:
                core.delete_namespace(name)
                finalized = client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=name),
                    spec=client.V1NamespaceSpec(finalizers=[]),
                )
                core.replace_namespace_finalize(name, finalized)
            except ApiException as err:
                if err.status != 404:
                    raise

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        audiences: list[str] | None = None,
        expiration_seconds: int = 3600,
    ) -> str:
        """Mint a bearer token for ServiceAccount `namespace/name` with the TokenRequest
        API (as kubelet does for a pod). The ServiceAccount must exist. Use it with
        `api_client(token=...)`, `kubectl(..., token=...)` or `write_kubeconfig`."""
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(
                    audiences=audiences or [SERVICE_ACCOUNT_ISSUER],
                    expiration_seconds=expiration_seconds,
                )
            )
            answer = core.create_namespaced_service_account_token(name, namespace, request)
        if answer.status is None or not answer.status.token:
            raise KubeRigError(f"TokenRequest for {namespace}/{name} returned no token")
        return answer.status.token

    # -- logs -------------------------------------------------------------------------

    def log_offsets(self) -> dict[str, int]:
        """Current size of each log, to show only what a test added (see kube.py)."""
        offsets = {}
        for name, path in self.log_paths.items():
            with contextlib.suppress(OSError):
                offsets[name] = path.stat().st_size
        return offsets

    def iter_log_tails(
        self, since: dict[str, int] | None = None, lines: int = 60
    ) -> Iterator[tuple[str, str]]:
        for name, path in self.log_paths.items():
            text = tail(path, lines, (since or {}).get(name, 0))
            if text:
                yield name, f"({path})\n{text}"


class _PortTaken(Exception):
    def __init__(self, server: str, log_path: Path) -> None:
        super().__init__(server)
        self.server = server
        self.log_path = log_path
