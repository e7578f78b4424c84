"""The collector's per-pod key settings and what it does before any network call."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlock.sidecar.config import ConfigError, config_from_dict
from auditlock.sidecar.pod_key import CertificateRefused, PodKey

DESTINATION = {"url": "file:///tmp/store"}


@pytest.mark.parametrize(
    "stream",
    [
        {"id": "c_ns_pod"},  # neither
        {"id": "c_ns_pod", "signing_key_file": "/k.pem", "certificate_url": "https://op/"},
    ],
)
def test_a_collector_signs_with_exactly_one_kind_of_key(stream: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="exactly one of signing_key_file"):
        config_from_dict({"destination": DESTINATION, "stream": stream}, environ={})


def test_a_per_pod_config_names_no_key_file() -> None:
    stream = {"id": "c_ns_pod", "certificate_url": "https://op:8443/v1/certificates"}
    config = config_from_dict({"destination": DESTINATION, "stream": stream}, environ={})
    assert config.stream.signing_key_file is None


def test_each_start_has_its_own_key_and_renews_at_two_thirds(tmp_path: Path) -> None:
    first = PodKey("https://127.0.0.1:1/v1/certificates", "c_ns_pod", str(tmp_path / "t"))
    second = PodKey("https://127.0.0.1:1/v1/certificates", "c_ns_pod", str(tmp_path / "t"))
    assert first.signer.key_id != second.signer.key_id and not first.certified
    first.certified_at_ns, first.not_after_ns = 300, 600
    assert first.renew_at_ns() == 500
    with pytest.raises(CertificateRefused, match="cannot read the pod's token"):
        second.certify()  # the kubelet has not projected the token yet
    (tmp_path / "t").write_text("token")
    with pytest.raises(CertificateRefused, match="not reachable"):
        second.certify()
