"""What the deployment files say, read the way more than one test checks them: the
operator's HTTPS routes, and the quickstart script's `auditlock count` arguments."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kind-quickstart.sh"


def operator_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the operator's HTTPS server answers."""
    from auditlock.operator.injection import InjectionSettings
    from auditlock.operator.registry import PolicyRegistry
    from auditlock.operator.webhook_server import WebhookServer

    server = WebhookServer(
        registry=PolicyRegistry(),
        injection=InjectionSettings(cluster="test", image="x", native_sidecar=True),
        listeners=[],
    )
    routes = server.app().router.routes()
    return {(r.method, r.resource.canonical) for r in routes if r.resource is not None}


def quickstart_count_args() -> list[str]:
    """The arguments after `count "$trail"` in the script's event check."""
    match = re.search(r'^"\$AUDITLOCK" count "\$trail" (.+?) \|\|$', SCRIPT.read_text(), re.M)
    assert match, "scripts/kind-quickstart.sh runs `auditlock count` on the verified trail"
    return match.group(1).split()
