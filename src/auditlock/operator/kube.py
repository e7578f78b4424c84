"""The few Kubernetes API calls the operator makes, on the official (blocking) client.

Every method blocks; the reconciler calls them with `asyncio.to_thread` so kopf's event
loop (and the webhooks sharing it) never waits on the network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from auditlock.operator.names import COLLECTOR_CONTAINER, LABEL_POLICY
from auditlock.operator.pod_census import PodView
from auditlock.policy.model import GROUP, PLURAL, VERSION

_T = TypeVar("_T")


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class ServerVersion:
    major: int
    minor: int
    git_version: str

    @property
    def native_sidecars(self) -> bool:
        """Native sidecars (restartPolicy: Always init containers) are on by default
        from Kubernetes 1.29."""
        return (self.major, self.minor) >= (1, 29)


@dataclass(frozen=True, repr=False)
class SecretSeen:
    """A Secret as one read saw it; repr=False keeps the values out of any log line."""

    resource_version: str
    type: str
    values: dict[str, bytes]


@dataclass(frozen=True)
class PodFacts:
    """What the abandonment sweep needs to know about a pod that exists."""

    uid: str
    created: datetime | None
    collector: bool  # carries the auditlock-collector container


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster ServiceAccount credentials, else the kubeconfig (`KUBECONFIG`)."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    return client.ApiClient(configuration)


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Typed as Any: we pass plain dict bodies, which the client accepts at run time.
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    def server_version(self) -> ServerVersion:
        info: Any = client.VersionApi(self.api).get_code()
        minor = "".join(ch for ch in str(info.minor) if ch.isdigit()) or "0"
        return ServerVersion(int(info.major), int(minor), str(info.git_version))

    # -- Secrets and ConfigMaps -------------------------------------------------------

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's base64 `data`, or None when it does not exist."""
        secret = _unless_missing(lambda: self.core.read_namespaced_secret(name, namespace))
        return None if secret is None else dict(secret.data or {})

    def observe_secret(self, namespace: str, name: str, timeout: float) -> SecretSeen | None:
        """The Secret as it is now (resourceVersion, type, decoded values), or None when it
        does not exist. For hashing only: callers never keep or log the values."""
        secret = _unless_missing(
            lambda: self.core.read_namespaced_secret(name, namespace, _request_timeout=timeout)
        )
        if secret is None:
            return None
        values: dict[str, bytes] = {}
        for key, encoded in (secret.data or {}).items():
            try:
                values[str(key)] = base64.b64decode(encoded or "", validate=True)
            except (binascii.Error, ValueError):
                values[str(key)] = str(encoded).encode()
        return SecretSeen(
            resource_version=str(secret.metadata.resource_version or ""),
            type=str(secret.type or ""),
            values=values,
        )

    def create_secret(
        self, namespace: str, name: str, data: dict[str, str], meta: dict[str, Any]
    ) -> bool:
        """Create; False when it already exists (another replica won the race)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, **meta},
            "data": data,
        }
        try:
            self.core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def secret_annotation(self, namespace: str, name: str, key: str) -> str | None:
        secret = self.core.read_namespaced_secret(name, namespace)
        return (secret.metadata.annotations or {}).get(key)

    def replace_secret_data(
        self, namespace: str, name: str, data: dict[str, str], annotations: dict[str, str]
    ) -> None:
        self.core.patch_namespaced_secret(
            name, namespace, {"metadata": {"annotations": annotations}, "data": data}
        )

    def apply_config_map(
        self, namespace: str, name: str, data: dict[str, str], meta: dict[str, Any]
    ) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}}
        body["data"] = data
        try:
            current = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_config_map(namespace, body)
            return
        if (current.data or {}) != data:
            self.core.patch_namespaced_config_map(name, namespace, body)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            if kind == "Secret":
                self.core.delete_namespaced_secret(name, namespace)
            else:
                self.core.delete_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def namespace_uid(self, namespace: str) -> str:
        return str(self.core.read_namespace(namespace).metadata.uid)

    def label_namespace(self, namespace: str, key: str, value: str | None) -> None:
        """Set (or with None remove) one label on a namespace, if it differs."""
        current = self.core.read_namespace(namespace)
        labels = current.metadata.labels or {}
        if labels.get(key) == value:
            return
        self.core.patch_namespace(namespace, {"metadata": {"labels": {key: value}}})

    # -- Pods ---------------------------------------------------------------------------

    def census_pods(self, namespace: str, selector: str, policy: str) -> list[PodView]:
        """Running pods (not finished, not being deleted) the label `selector` matches or
        that carry `policy`'s collector label: two lists the API server filters."""
        found: dict[str, PodView] = {}
        for label_selector in (selector, f"{LABEL_POLICY}={policy}"):
            pods = self.core.list_namespaced_pod(namespace, label_selector=label_selector)
            for pod in pods.items:
                if pod.metadata.deletion_timestamp is not None:
                    continue
                if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                    continue
                found[pod.metadata.name] = PodView(
                    name=str(pod.metadata.name),
                    labels=dict(pod.metadata.labels or {}),
                    annotations=dict(pod.metadata.annotations or {}),
                    created=pod.metadata.creation_timestamp,
                    collector=_has_collector(pod.spec),
                    shares_processes=bool(
                        pod.spec and (pod.spec.share_process_namespace or pod.spec.host_pid)
                    ),
                )
            if not selector:
                break  # the empty selector listed every pod already
        return list(found.values())

    def pods_by_name(self, namespace: str) -> dict[str, PodFacts]:
        """Every pod of the namespace (any label, any phase), by name."""
        pods = self.core.list_namespaced_pod(namespace)
        facts = {}
        for pod in pods.items:
            facts[pod.metadata.name] = PodFacts(
                uid=str(pod.metadata.uid or ""),
                created=pod.metadata.creation_timestamp,
                collector=_has_collector(pod.spec),
            )
        return facts

    def review_token(self, token: str, audience: str) -> dict[str, Any]:
        """The API server's TokenReview `status` of a bearer token for `audience`."""
        review: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        # Raw JSON: the client's model classes cost more than the request itself.
        answer: Any = client.AuthenticationV1Api(self.api).create_token_review(
            review, _preload_content=False
        )
        status = orjson.loads(answer.data).get("status")
        return status if isinstance(status, dict) else {}

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it now; None when there is no such pod."""
        answer = _unless_missing(
            lambda: self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        )
        if answer is None:
            return None
        pod = orjson.loads(answer.data)
        return pod if isinstance(pod, dict) else None

    def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved` (apiVersion, kind, metadata), as kopf posts
        them; for code that runs outside kopf's handlers, where kopf cannot post."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.core.create_namespaced_event(
            meta["namespace"],
            {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": involved.get("apiVersion", ""),
                    "kind": involved.get("kind", ""),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid", ""),
                },
                "type": kind,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": "auditlock-operator"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    # -- AuditPolicies ------------------------------------------------------------------

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        policy: dict[str, Any] | None = _unless_missing(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        )
        return policy

    def list_policies(self) -> list[dict[str, Any]]:
        answer = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return list(answer.get("items", []))

    def patch_policy_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{namespace}/{name}") from exc
            raise

    def patch_policy_status_at(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> None:
        """Patch status only if the policy is still at `resource_version` (else the
        API server answers 409 Conflict, raised as ApiException)."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"resourceVersion": resource_version}, "status": status},
        )


def _has_collector(spec: Any) -> bool:
    containers = [*(spec.init_containers or []), *(spec.containers or [])]
    return any(c.name == COLLECTOR_CONTAINER for c in containers)


def kopf_connection(api: client.ApiClient) -> Any:
    """kopf credentials equal to the client's (used with an explicit --kubeconfig; in a
    cluster kopf reads the ServiceAccount itself and follows token rotation)."""
    import kopf

    configuration: Any = api.configuration
    keys = configuration.api_key or {}
    # The client keeps the token under "BearerToken" (kubeconfig loader) or
    # "authorization" (hand-made configurations), with or without its scheme.
    auth = str(keys.get("BearerToken") or keys.get("authorization") or "")
    prefix = (configuration.api_key_prefix or {}).get("BearerToken")
    if prefix and not auth.startswith(prefix):
        auth = f"{prefix} {auth}"
    scheme, _, token = auth.partition(" ")
    if not token:
        scheme, token = ("Bearer", scheme) if scheme else ("", "")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _unless_missing(read: Callable[[], _T]) -> _T | None:
    """`read()`, or None when the API server answers 404: there is no such object."""
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
