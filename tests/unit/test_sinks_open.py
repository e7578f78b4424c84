"""`sinks.open`: scheme selection, options, and URL parsing (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlock import sinks
from auditlock.sinks import DestinationError
from auditlock.sinks.gcs import GCSDestination
from auditlock.sinks.s3 import S3Destination
from tests.helpers.gcs import EMAIL, service_account_info


def test_unknown_option_is_a_destination_error_naming_it() -> None:
    with pytest.raises(DestinationError, match="bogus"):
        sinks.open("s3://bucket/p", bogus=1)


def test_s3_url_parts_and_query() -> None:
    dest = sinks.open("s3://bkt/a/b/?endpoint=http://127.0.0.1:9&region=eu-west-1&addressing=path")
    assert isinstance(dest, S3Destination)
    assert (dest.bucket, dest.prefix) == ("bkt", "a/b")
    assert dest.endpoint_url == "http://127.0.0.1:9" and dest.region == "eu-west-1"
    assert dest.addressing_style == "path"


def test_s3_options_win_over_query() -> None:
    dest = sinks.open("s3://bkt?endpoint=http://a", endpoint_url="http://b")
    assert isinstance(dest, S3Destination) and dest.endpoint_url == "http://b"


def test_bad_addressing_style_is_refused() -> None:
    with pytest.raises(DestinationError, match="addressing style"):
        sinks.open("s3://bkt?addressing=sideways")


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "gs://", "gs:///x"])
def test_url_without_bucket_is_refused(url: str) -> None:
    with pytest.raises(DestinationError, match="BUCKET"):
        sinks.open(url)


def test_gcs_service_account_info_builds_credentials_without_network() -> None:
    dest = sinks.open("gs://bkt/p", credentials_info=service_account_info())
    assert isinstance(dest, GCSDestination) and not dest.anonymous
    creds = dest.client._credentials
    assert creds.service_account_email == EMAIL == "trail-writer@acme.iam.gserviceaccount.com"


def test_gcs_emulator_env_means_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    dest = sinks.open("gs://bkt/p")
    assert isinstance(dest, GCSDestination)
    assert dest.endpoint == "http://127.0.0.1:1" and dest.anonymous


@pytest.mark.parametrize(
    ("url", "blocked", "extra"),
    [("s3://b/p", "boto3", "s3"), ("gs://b/p", "google.cloud", "gcs")],
)
def test_missing_client_library_names_the_extra_to_install(
    url: str, blocked: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` fail
    module = {"s3": "auditlock.sinks.s3", "gcs": "auditlock.sinks.gcs"}[extra]
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(DestinationError, match=rf"pip install 'auditlock\[{extra}\]'"):
        sinks.open(url)


def test_missing_aws_credentials_say_how_to_give_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    dest = sinks.open("s3://b/p?endpoint=http://127.0.0.1:9&region=us-east-1")
    for call in (lambda: dest.get("x"), lambda: dest.put("x", b"y", None)):
        with pytest.raises(DestinationError, match="no AWS credentials found; set AWS_ACCESS"):
            call()
