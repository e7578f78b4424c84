"""The handoff from the validating front end to the lean collector: what the collector
rebuilds from the front end's JSON is exactly the validated config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditlock.sidecar.config import SidecarConfig, config_from_dict, config_json
from auditlock.sidecar.handoff import config_from_validated

EVERY_SECTION = {
    "destination": {
        "url": "s3://bucket/trail",
        "retention_days": 400,
        "lock_mode": "Unlocked",
        "options": {"endpoint": "http://127.0.0.1:8333", "region": "eu", "nested": {"a": [1]}},
    },
    "stream": {"id": "shop_api-1", "signing_key_file": "/keys/ed25519.pem"},
    "source": {"cluster": "c1", "namespace": "shop", "pod": "api-1", "node": "n1"},
    "sources": {
        "forward": {"port": 24225, "shared_key": "k", "chunk_memory": 5000},
        "http": {"enabled": False},
        "config_files": {"enabled": True, "paths": ["/etc/app"], "poll_seconds": 1},
        "access_proxy": {"enabled": True, "identity_headers": ["x-user"]},
    },
    "pipeline": {
        "categories": ["access", "configuration"],
        "include": [{"field": "actor.name", "values": ["alice"]}],
        "exclude": [{"field": "action", "values": ["healthcheck", "ping"]}],
        "redact": ["details.password"],
    },
    "spool": {"dir": "/var/spool/auditlock", "max_bytes": 1048576},
    "delivery": {"batch_max_events": 100, "max_delay_seconds": 1, "heartbeat_seconds": 30},
    "health": {"host": "127.0.0.1", "port": 0},
    "shutdown_grace_seconds": 15,
    "log_level": "DEBUG",
}


@pytest.mark.parametrize(
    "data",
    [EVERY_SECTION, {k: EVERY_SECTION[k] for k in ("destination", "stream")}],
    ids=["every-section", "minimal"],
)
def test_collector_rebuilds_exactly_the_validated_config(data: dict[str, object]) -> None:
    validated = config_from_dict(data, environ={})
    rebuilt = config_from_validated(json.loads(config_json(validated)))
    assert rebuilt == validated
    assert isinstance(rebuilt.spool.dir, Path)
    assert isinstance(rebuilt.shutdown_grace_seconds, float)


def test_a_key_the_collector_does_not_know_fails_loudly() -> None:
    # A front end and collector of different versions must not silently drop a setting.
    data = json.loads(config_json(config_from_dict(EVERY_SECTION, environ={})))
    data["spool"]["compress"] = True
    with pytest.raises(TypeError, match="compress"):
        config_from_validated(data)


def test_the_collector_checks_the_stream_id_again() -> None:
    data = json.loads(config_json(config_from_dict(EVERY_SECTION, environ={})))
    data["stream"]["id"] = "shop/api-1"
    with pytest.raises(ValueError, match="<namespace>_<pod>"):
        config_from_validated(data)


def test_check_prints_the_validated_config_as_json(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(EVERY_SECTION))
    done = subprocess.run(
        [sys.executable, "-m", "auditlock.sidecar", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(done.stdout)
    assert printed["delivery"]["uploads_in_flight"] == 4  # defaults are filled in
    # The Forward shared key is a secret: --check says it is set, never its value.
    assert printed["sources"]["forward"]["shared_key"] == "(set, not shown)"
    printed["sources"]["forward"]["shared_key"] = "k"
    assert config_from_validated(printed) == config_from_dict(EVERY_SECTION, environ={})


def test_the_collector_entry_refuses_to_start_without_a_validated_config() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "auditlock.sidecar.handoff", "--config", "x.yaml"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "auditlock sidecar --config FILE" in done.stderr


def test_sidecar_config_is_frozen() -> None:
    config = config_from_dict(EVERY_SECTION, environ={})
    assert isinstance(config, SidecarConfig)
    with pytest.raises(AttributeError):
        config.spool.max_bytes = 1  # type: ignore[misc]


def test_front_end_runs_the_collector_itself_when_exec_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from auditlock.sidecar import handoff

    opened: list[int] = []
    real_memfd = os.memfd_create

    def memfd(name: str, flags: int = 0) -> int:
        opened.append(real_memfd(name, flags))
        return opened[-1]

    def refuse(path: str, argv: list[str]) -> None:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(os, "memfd_create", memfd)
    monkeypatch.setattr(os, "execv", refuse)
    handoff.exec_collector(config_from_dict(EVERY_SECTION, environ={}))  # returns
    assert "running the collector in the front end's process" in capsys.readouterr().err
    with pytest.raises(OSError):
        os.fstat(opened[0])  # the memfd was closed, not leaked
