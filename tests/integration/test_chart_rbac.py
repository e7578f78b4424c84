"""The chart's RBAC is sufficient and minimal, proven on the real API server.

Sufficient: a representative set of the operator's own integration scenarios
(tests/helpers/operator_scenarios.py, which test_operator_policies.py runs as admin)
runs here unchanged, with the operator
authenticated as the chart's ServiceAccount (a token minted with the TokenRequest API)
instead of as admin: this module's `running_operator` fixture is that operator.

Minimal: the operator's API traffic goes through a recording TLS proxy. After the
scenarios, every (API group, resource, verb) the chart's ClusterRole grants must have
been used by the operator, and the operator must have used nothing it was not granted
(beyond the discovery and /version endpoints every authenticated user may read).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from tests.helpers import operator_scenarios as scenarios
from tests.helpers.policies import create_ready_policy, file_spec, wait_for
from tests.integration.chart_helpers import RELEASE, InstalledRelease, install_release
from tests.servers.auditlock_operator import RunningOperator, post_pod_review, start_operator
from tests.servers.kube_controlplane import KubeControlPlane

_finished: set[str] = set()  # scenarios of this module that ran to the end

# The operator's scenarios start it with the watch fallback on, so the chart is
# installed with the RBAC that option needs.
CHART_VALUES = {"operator": {"watchFallback": True}}

Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)


# -- a recording proxy in front of the API server -----------------------------------------


@dataclass
class RecordingProxy:
    """HTTPS on 127.0.0.1 -> the real API server; records what each bearer token asks."""

    upstream: str
    kube: KubeControlPlane
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (token, method, url)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _session: ClientSession | None = None

    def start(self) -> RecordingProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def main() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="rbac-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise TimeoutError("recording proxy did not start")
        return self

    async def _serve(self) -> None:
        pair = self.kube.issue_serving_cert("rbac-recording-proxy")
        connector = TCPConnector(ssl=self.kube.client_ssl_context())
        self._session = ClientSession(connector=connector, timeout=ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Watches stay open for minutes: do not wait for them when the proxy stops.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", 0, ssl_context=self.kube.server_ssl_context(pair)
        )
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"https://127.0.0.1:{port}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        self.requests.append((token, request.method, request.path_qs))
        skip = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        assert self._session is not None
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            # Forward exactly what the client sent: the API server reads a body without a
            # Content-Type as JSON, but refuses aiohttp's default octet-stream.
            skip_auto_headers=("Content-Type",),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in skip | {"content-encoding"}:
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(15)

    def permissions_used(self, token: str) -> set[Permission]:
        used = set()
        for sent, method, url in list(self.requests):
            if sent == token:
                permission = permission_of(method, url)
                if permission is not None:
                    used.add(permission)
        return used


def permission_of(method: str, url: str) -> Permission | None:
    """The RBAC (group, resource, verb) an API request needs; None for non-resource URLs
    (/version, discovery), which every authenticated user may read."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:2] == ["api", "v1"]:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 3:
        group, rest = segments[1], segments[3:]
    else:
        return None
    if not rest:
        return None  # discovery of a group version
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource: drop namespaces/<name>
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2:]
    if sub:
        resource = f"{resource}/{sub[0]}"
    query = parse_qs(parts.query)
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method)
    if method == "GET":
        if query.get("watch", [""])[0] in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    if verb is None:
        raise AssertionError(f"unexpected request {method} {url}")
    return group, resource, verb


def permissions_granted(release: InstalledRelease) -> set[Permission]:
    role = next(o for o in release.manifest() if o["kind"] == "ClusterRole")
    granted = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


# -- fixtures -----------------------------------------------------------------------------


@dataclass
class ServiceAccountRun:
    release: InstalledRelease
    proxy: RecordingProxy
    token: str


@pytest.fixture(scope="module")
def service_account_run(
    kube_apiserver: KubeControlPlane, helm_path: Path
) -> Iterator[ServiceAccountRun]:
    release_iter = install_release(kube_apiserver, helm_path, CHART_VALUES)
    release = next(release_iter)
    try:
        wait_crd_established(kube_apiserver, "auditpolicies.auditlock.io")
        token = kube_apiserver.service_account_token(release.namespace, release.service_account())
        proxy = RecordingProxy(upstream=kube_apiserver.url, kube=kube_apiserver).start()
        try:
            yield ServiceAccountRun(release, proxy, token)
        finally:
            proxy.stop()
    finally:
        next(release_iter, None)


@pytest.fixture(scope="module")
def running_operator(service_account_run: ServiceAccountRun) -> Iterator[RunningOperator]:
    """The operator's scenarios' fixture, but authenticated as the chart's ServiceAccount,
    coordinated through the chart's ClusterKopfPeering, and talking through the proxy."""
    run = service_account_run
    proxied = copy.copy(run.release.kube)
    proxied.url = run.proxy.url
    peering = next(o for o in run.release.manifest() if o["kind"] == "ClusterKopfPeering")
    running = start_operator(
        proxied,
        token=run.token,
        standalone=False,
        peering_name=peering["metadata"]["name"],
        # Published where the chart's collector reads it, as the chart's args say.
        identity_config_map=(run.release.namespace, f"{RELEASE}-auditlock-cluster"),
        secret_hash_key=(run.release.namespace, f"{RELEASE}-auditlock-secret-hash-key"),
    )
    try:
        yield running
    finally:
        running.stop()


def wait_crd_established(kube: KubeControlPlane, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd: dict[str, Any] = kube.get_json(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        )
        conditions = crd.get("status", {}).get("conditions", [])
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not Established within {timeout} s")


# -- the operator's scenarios, as the chart's ServiceAccount ------------------------------

# Each takes the fixtures its parameters name (tests/helpers/operator_scenarios.py).
SCENARIOS = (
    "policy_on_locked_s3_is_ready_within_5s",
    "selected_pod_is_injected_and_others_untouched",
    "policy_update_raises_stale_pod_count",
    "required_enforcement_refuses_pod_without_collector",
    "invalid_policies_are_refused_or_reported_and_others_still_served",
    "missing_credentials_secret_is_reported_then_retried",
    "selected_pods_without_a_collector_are_counted_and_named",
    "delete_removes_owned_objects_and_keeps_the_data",
    "key_rotation_is_signed_by_the_old_key",
    "exec_secret_read_and_rolebinding_become_ledger_events",
    "alert_rule_is_validated_evaluated_and_published",
)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_as_the_charts_service_account(name: str, request: pytest.FixtureRequest) -> None:
    scenarios.run(name, request)
    _finished.add(name)


def test_every_operator_scenario_runs_as_the_service_account() -> None:
    defined = {
        name
        for name, value in vars(scenarios).items()
        if inspect.isfunction(value) and value.__module__ == scenarios.__name__
    } - {"scenario", "run"}
    assert set(SCENARIOS) == defined == set(scenarios.ALL)


# -- what the run proves ------------------------------------------------------------------


def test_operator_acts_as_the_charts_service_account(
    running_operator: RunningOperator, service_account_run: ServiceAccountRun
) -> None:
    run = service_account_run
    used = run.proxy.permissions_used(run.token)
    assert ("auditlock.io", "auditpolicies", "watch") in used
    # Nothing the operator did went with any other credential.
    tokens = {token for token, _, _ in run.proxy.requests} - {
        run.token,
        run.release.kube.admin_token,
    }
    assert not tokens
    # kopf peering wrote this replica's keep-alive into the chart's peering object.
    peering = next(o for o in run.release.manifest() if o["kind"] == "ClusterKopfPeering")
    current = run.release.kube.get_json(
        f"/apis/kopf.dev/v1/clusterkopfpeerings/{peering['metadata']['name']}"
    )
    assert current.get("status"), "no keep-alive from the operator in the peering object"


def test_two_replicas_as_the_service_account_one_leads_both_admit(
    running_operator: RunningOperator,
    service_account_run: ServiceAccountRun,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """The chart's high-availability shape: replicas with the chart's peering object and
    distinct random priorities (what `--priority random` draws), as its ServiceAccount."""
    run = service_account_run
    kube = run.release.kube
    proxied = copy.copy(kube)
    proxied.url = run.proxy.url
    peering = next(o for o in run.release.manifest() if o["kind"] == "ClusterKopfPeering")
    name = peering["metadata"]["name"]
    replicas = [
        start_operator(
            proxied,
            token=run.token,
            audit_intake=False,
            register=False,
            watch_fallback=False,
            standalone=False,
            peering_name=name,
            priority=secrets.randbelow(2**31),
        )
        for _ in range(2)
    ]
    try:
        create_ready_policy(kube, kube_namespace, "ha", file_spec(tmp_path / "trail"), timeout=20)
        status = kube.get_json(f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}").get("status", {})
        live = [p["priority"] for p in status.values() if p.get("lifetime", 0) > 0]
        assert len(live) >= 3 and len(set(live)) == len(live), status  # + the module's one
        for replica in replicas:

            def injects(url: str = replica.webhook_url) -> dict[str, object] | None:
                answer = post_pod_review(url, kube, kube_namespace)
                return answer if answer.get("patch") else None

            assert (
                wait_for("the replica admits with the policy's injection", injects)["allowed"]
                is True
            )
    finally:
        for replica in replicas:
            replica.stop()


def test_rbac_grants_exactly_what_the_operator_used(
    running_operator: RunningOperator, service_account_run: ServiceAccountRun
) -> None:
    """Runs after the scenarios above (pytest keeps the module's order)."""
    missing = set(SCENARIOS) - _finished
    if missing:
        pytest.skip(f"judges the whole module's traffic; these scenarios did not run: {missing}")
    run = service_account_run
    used = run.proxy.permissions_used(run.token)
    granted = permissions_granted(run.release)
    assert used <= granted, (
        f"used but not granted (the scenarios should have failed): {used - granted}"
    )
    assert granted <= used, f"granted but never used by the operator: {sorted(granted - used)}"
