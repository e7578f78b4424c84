"""Shared fixtures. Each real server has its own module under tests/servers/."""

pytest_plugins: list[str] = [
    "tests.servers.managed",
    "tests.servers.seaweedfs",
    "tests.servers.fakegcs",
    "tests.servers.kube",
    "tests.servers.chromium",
    "tests.servers.auditlock_operator",
    "tests.servers.alertmanager",
    "tests.servers.prometheus",
    "tests.servers.prometheus_operator_crds",
    "tests.servers.tsa",
    "tests.servers.timestamp_authority",
    "tests.integration.chart_helpers",
]
