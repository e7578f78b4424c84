"""Run one container of an admitted Pod on this machine, the way a kubelet would.

The test API server has no kubelet, so Pods stay Pending. To prove that the injected
collector works *as injected*, this module does the kubelet's part for one container:

- binds the Pod to a Node (the scheduler's job) so `spec.nodeName` is real;
- resolves the container's `env` exactly as the kubelet does: literal values with
  `$(VAR)` expansion of earlier variables, `fieldRef` from the Pod (downward API) and
  `secretKeyRef` / `configMapKeyRef` read from the API;
- projects every `volumeMount` to a local folder: ConfigMap and Secret volumes in the
  kubelet's atomic-writer layout (`..data` symlink to a timestamped folder, one symlink
  per key), emptyDirs as empty folders;
- starts `command` + `args` in a private mount namespace (`unshare --mount`) in which
  each projected folder is bind-mounted at its `mountPath`, so the process sees the same
  paths it would see in the container. Only the root filesystem is the host's.

ConfigMap updates are re-projected by `reproject`, with the kubelet's symlink swap, so
a watcher of mounted files sees what it would see in a cluster.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known variables are replaced, `$$` is a literal
    `$`, unknown references stay as written (the kubelet's rules)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(replace, value)


def project(target: Path, files: dict[str, bytes], mode: int = 0o644) -> None:
    """Write `files` into `target` like the kubelet's atomic writer: the data lives in a
    fresh `..<timestamp>` folder, `..data` points at it, and each key is a symlink
    through `..data`. Replacing `..data` with a rename is the atomic update a
    Kubernetes-aware file watcher must handle."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:8]}"
    payload = target / stamp
    payload.mkdir()
    for key, data in files.items():
        path = payload / key
        path.write_bytes(data)
        path.chmod(mode)
    old = (target / "..data").resolve() if (target / "..data").is_symlink() else None
    tmp_link = target / "..data_tmp"
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, target / "..data")
    for key in files:
        link = target / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    for link in target.iterdir():
        if link.is_symlink() and not link.name.startswith("..") and link.name not in files:
            link.unlink()
    if old is not None and old.exists():
        shutil.rmtree(old)


@dataclass
class ContainerRun:
    """One container of one Pod, materialised under `workdir` and run locally."""

    kube: Any  # tests.servers.kube_controlplane.KubeControlPlane
    pod: dict[str, Any]
    container_name: str
    workdir: Path
    extra_path: list[str] = field(default_factory=list)
    # Host folders that play the image's part (the installed auditlock): kept visible
    # even when a volume is mounted over a folder that contains them.
    image_paths: list[Path] = field(default_factory=list)
    volumes: dict[str, Path] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    created_mountpoints: list[Path] = field(default_factory=list)

    @property
    def container(self) -> dict[str, Any]:
        spec = self.pod["spec"]
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            if container["name"] == self.container_name:
                return dict(container)
        raise KeyError(f"pod has no container {self.container_name!r}")

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.container_name}.log"

    # -- the kubelet's preparation --------------------------------------------------

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for mount in self.container.get("volumeMounts") or []:
            volume = self._volume(mount["name"])
            local = self.workdir / "volumes" / mount["name"]
            if mount["name"] not in self.volumes:
                self._project_volume(volume, local)
                self.volumes[mount["name"]] = local
        self.env = self._resolve_env()

    def reproject(self, volume_name: str) -> None:
        """Re-read a ConfigMap/Secret volume from the API and swap it in atomically."""
        self._project_volume(self._volume(volume_name), self.volumes[volume_name])

    def _volume(self, name: str) -> dict[str, Any]:
        for volume in self.pod["spec"].get("volumes") or []:
            if volume["name"] == name:
                return dict(volume)
        raise KeyError(f"pod has no volume {name!r}")

    def _project_volume(self, volume: dict[str, Any], local: Path) -> None:
        from kubernetes import client

        with self.kube.api_client() as api:
            core = client.CoreV1Api(api)
            if "configMap" in volume:
                cm = core.read_namespaced_config_map(volume["configMap"]["name"], self.namespace)
                files = {k: v.encode() for k, v in (cm.data or {}).items()}
                project(local, files, volume["configMap"].get("defaultMode", 0o644))
            elif "secret" in volume:
                secret = core.read_namespaced_secret(volume["secret"]["secretName"], self.namespace)
                files = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
                project(local, files, volume["secret"].get("defaultMode", 0o644))
            elif "emptyDir" in volume:
                local.mkdir(parents=True, exist_ok=True)
            elif "projected" in volume:
                files = self._projected_files(core, volume["projected"]["sources"])
                project(local, files, volume["projected"].get("defaultMode", 0o644))
            else:
                raise NotImplementedError(f"volume type of {volume['name']!r} is not projected")

    def _pod_token(self, core: Any, source: dict[str, Any]) -> bytes:
        """A token of the pod's ServiceAccount bound to the pod (its name and UID in the
        claims) for the source's audience, as the kubelet mints a projected one."""
        from kubernetes import client

        meta = self.pod["metadata"]
        ref = client.V1BoundObjectReference(
            api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"]
        )
        spec = client.V1TokenRequestSpec(
            audiences=[source["audience"]] if source.get("audience") else None,
            expiration_seconds=int(source.get("expirationSeconds", 3600)),
            bound_object_ref=ref,
        )
        answer = core.create_namespaced_service_account_token(
            self.pod["spec"].get("serviceAccountName") or "default",
            self.namespace,
            client.AuthenticationV1TokenRequest(spec=spec),
        )
        token: str = answer.status.token
        return token.encode()

    def _projected_files(self, core: Any, sources: list[dict[str, Any]]) -> dict[str, bytes]:
        """The ServiceAccount admission plugin's `kube-api-access-*` volume and the like:
        a bound token from the TokenRequest API, ConfigMap items, downward API items."""
        files: dict[str, bytes] = {}
        for source in sources:
            if "serviceAccountToken" in source:
                files[source["serviceAccountToken"]["path"]] = self._pod_token(
                    core, source["serviceAccountToken"]
                )
            elif "configMap" in source:
                ref = source["configMap"]
                cm = core.read_namespaced_config_map(ref["name"], self.namespace)
                for item in ref.get("items") or [{"key": k, "path": k} for k in cm.data or {}]:
                    files[item["path"]] = cm.data[item["key"]].encode()
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    files[item["path"]] = self._field(item["fieldRef"]["fieldPath"]).encode()
            else:
                raise NotImplementedError(f"projected source {sorted(source)} is not projected")
        return files

    def _resolve_env(self) -> dict[str, str]:
        from kubernetes import client

        resolved: dict[str, str] = {}
        with self.kube.api_client() as api:
            core = client.CoreV1Api(api)
            for var in self.container.get("env") or []:
                if "value" in var:
                    resolved[var["name"]] = expand(var["value"], resolved)
                    continue
                source = var.get("valueFrom") or {}
                if "fieldRef" in source:
                    resolved[var["name"]] = self._field(source["fieldRef"]["fieldPath"])
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    secret = core.read_namespaced_secret(ref["name"], self.namespace)
                    resolved[var["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
                elif "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    cm = core.read_namespaced_config_map(ref["name"], self.namespace)
                    resolved[var["name"]] = cm.data[ref["key"]]
                else:
                    raise NotImplementedError(f"env source of {var['name']!r}")
        return resolved

    def _field(self, path: str) -> str:
        node: Any = self.pod
        for part in path.split("."):
            node = (node or {}).get(part)
        return "" if node is None else str(node)

    # -- running --------------------------------------------------------------------

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the container's command in a private mount namespace."""
        container = self.container
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        argv = [expand(a, self.env) for a in argv]
        mounts = [
            (str(self.volumes[m["name"]]), str(m["mountPath"]))
            for m in container.get("volumeMounts") or []
        ]
        script = ["set -e", "keep=$(mktemp -d /run/podrun.XXXXXX)"]
        for i, (src, dst) in enumerate(mounts):
            mountpoint = Path(dst)
            if not mountpoint.exists():
                mountpoint.mkdir(parents=True)
                self.created_mountpoints.append(mountpoint)
            # A mount like /tmp can hide host paths the process still needs: the
            # installed program ("the image": the venv, the source tree) and the sources
            # of later mounts. Park them before mounting and re-expose them after.
            needed = [str(p) for p in self.image_paths] + [s for s, _ in mounts[i + 1 :]]
            hidden = [p for p in needed if p.startswith(dst.rstrip("/") + "/")]
            for j, path in enumerate(hidden):
                script += [f'mkdir -p "$keep/{i}-{j}"', f"mount --bind '{path}' \"$keep/{i}-{j}\""]
            script.append(f"mount --bind '{src}' '{dst}'")
            for j, path in enumerate(hidden):
                script += [f"mkdir -p '{path}'", f"mount --bind \"$keep/{i}-{j}\" '{path}'"]
        script.append('exec "$@"')
        env = {
            "PATH": os.pathsep.join([*self.extra_path, "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": "/tmp",
            **self.env,
            **(extra_env or {}),
        }
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "\n".join(script),
            "sh",
            *argv,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, as the kubelet does, then SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        code = self.proc.returncode
        for mountpoint in reversed(self.created_mountpoints):
            with contextlib.suppress(OSError):
                mountpoint.rmdir()
        self.created_mountpoints.clear()
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def answers_ok(url: str) -> bool:
    """True when `url` answers 200 now (a readiness probe, as the kubelet runs it)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def bind_to_node(kube: Any, namespace: str, pod_name: str, node_name: str) -> dict[str, Any]:
    """Do the scheduler's job: make sure `node_name` exists and bind the Pod to it.
    Returns the Pod as stored afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        try:
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node_name)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        binding = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod_name),
            target=client.V1ObjectReference(kind="Node", name=node_name),
        )
        # The generated client cannot decode the Binding answer; the request is what counts.
        core.create_namespaced_binding(namespace, binding, _preload_content=False)
        stored = core.read_namespaced_pod(pod_name, namespace)
        result: dict[str, Any] = api.sanitize_for_serialization(stored)
        return result
