"""Raw requests to the rig's kube-apiserver as a given bearer token (admin by default):
what a user or a ServiceAccount would send, with the answer's status and JSON body."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from tests.servers.kube_controlplane import KubeControlPlane


@dataclass
class Api:
    kube: KubeControlPlane
    context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=str(self.kube.ca_path))

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.kube.url}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.kube.admin_token}",
                "Content-Type": content_type,
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as answer:
                raw = answer.read()
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return status, parsed if isinstance(parsed, dict) else {}
