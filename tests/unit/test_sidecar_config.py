"""The sidecar config file: defaults, validation messages, environment overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditlock.sidecar.config import ConfigError, config_from_dict, load_config

MINIMAL = {
    "destination": {"url": "file:///tmp/trail"},
    "stream": {"id": "shop_api-1", "signing_key_file": "/keys/ed25519.pem"},
}


def test_minimal_file_gets_safe_defaults(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("destination: {url: 'file:///tmp/trail'}\n"
                    "stream: {id: shop_api-1, signing_key_file: /keys/k.pem}\n")  # fmt: skip
    config = load_config(path, environ={})
    assert config.sources.forward.host == "127.0.0.1"
    assert config.sources.forward.port == 24224
    assert config.sources.http.host == "127.0.0.1"
    assert config.delivery.uploads_in_flight >= 4
    assert config.spool.max_bytes > 0


def test_environment_overrides_nested_fields() -> None:
    config = config_from_dict(
        MINIMAL,
        environ={
            "AUDITLOCK_SIDECAR__STREAM__ID": "payments_api-7",
            "AUDITLOCK_SIDECAR__SOURCE__POD": "api-7",
            "AUDITLOCK_SIDECAR__SPOOL__MAX_BYTES": "1048576",
            "AUDITLOCK_SIDECAR__SOURCES__FORWARD__SHARED_KEY": "k",
            "AUDITLOCK_SIDECAR__PIPELINE__REDACT": '["details.password"]',
            "UNRELATED": "x",
        },
    )
    assert config.stream.id == "payments_api-7"
    assert config.source.pod == "api-7"
    assert config.spool.max_bytes == 1048576
    assert config.sources.forward.shared_key == "k"
    assert config.pipeline.redact == ["details.password"]


def test_unknown_keys_and_bad_values_name_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**MINIMAL, "spool": {"max_byte": 5}}, environ={})
    assert "spool.max_byte" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**MINIMAL, "delivery": {"uploads_in_flight": 0}}, environ={})
    assert "delivery.uploads_in_flight" in str(caught.value)


def test_stream_id_with_a_slash_is_refused_with_advice() -> None:
    bad = {**MINIMAL, "stream": {"id": "shop/api-1", "signing_key_file": "/k"}}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(bad, environ={})
    assert "<namespace>_<pod>" in str(caught.value)


def test_unreadable_or_invalid_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad, environ={})
    good = tmp_path / "good.json"
    good.write_text(json.dumps(MINIMAL))
    assert load_config(good, environ={}).stream.id == "shop_api-1"


def test_pipeline_paths_follow_the_policy_rules() -> None:
    """A hand-written file gets the AuditPolicy's path check (docs/operator.md)."""
    bad = {
        **MINIMAL,
        "pipeline": {
            "include": [{"field": "actor.user", "values": ["alice"]}],
            "redact": ["details.password", "attributes.card_number", "actor.ip"],
        },
    }
    with pytest.raises(ConfigError) as refused:
        config_from_dict(bad, environ={})
    text = str(refused.value)
    assert "pipeline.include.0.field: actor.user is not an event field" in text
    assert "pipeline.redact.1: attributes.card_number is not an event field" in text
    assert "so this is probably details.attributes.card_number" in text
    assert "pipeline.redact.2: actor.ip cannot be redacted" in text
    assert "pipeline.redact.0" not in text
    good = {**MINIMAL, "pipeline": {"redact": ["details.attributes.card_number"]}}
    assert config_from_dict(good, environ={}).pipeline.redact == ["details.attributes.card_number"]


def test_chunk_memory_is_capped_so_remembered_ids_fit_the_memory_limit() -> None:
    # About 100 bytes per remembered id: 500,000 is 50 MB of a 128 MiB container.
    allowed = config_from_dict({**MINIMAL, "sources": {"forward": {"chunk_memory": 500_000}}}, {})
    assert allowed.sources.forward.chunk_memory == 500_000
    with pytest.raises(ConfigError, match=r"sources\.forward\.chunk_memory"):
        config_from_dict({**MINIMAL, "sources": {"forward": {"chunk_memory": 5_000_000}}}, {})
