"""The gs:// sink's own JSON API client (gcs_json.py): credentials and time formats.

Its HTTP behaviour is covered against recorded responses (test_sinks_gcs_recorded.py)
and fake-gcs-server (tests/integration/test_sinks_gcs.py); these check the parts that
need no server: which credentials it builds, with the client library's scopes and the
same precedence as `GCSDestination.client`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from auditlock import sinks
from auditlock.sinks import DestinationError
from auditlock.sinks.gcs import GCSDestination
from auditlock.sinks.gcs_json import SCOPES, format_time, parse_time
from tests.helpers.gcs import EMAIL, service_account_info


def open_gcs(**options: Any) -> GCSDestination:
    dest = sinks.open("gs://bkt/p", **options)
    assert isinstance(dest, GCSDestination)
    return dest


def test_service_account_info_and_file_give_scoped_credentials(tmp_path: Path) -> None:
    info = service_account_info()
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(info))
    for dest in (open_gcs(credentials_info=info), open_gcs(credentials_file=str(key_file))):
        creds = dest.api.session.credentials
        assert creds.service_account_email == EMAIL
        assert tuple(creds.scopes) == SCOPES
        assert dest.api.base == "https://storage.googleapis.com"
        dest.close()


def test_emulator_endpoint_means_anonymous_credentials() -> None:
    dest = open_gcs(endpoint="http://127.0.0.1:1/")
    assert isinstance(dest.api.session.credentials, AnonymousCredentials)
    assert dest.api.base == "http://127.0.0.1:1"


def test_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    dest = open_gcs(credentials_file=str(tmp_path / "absent.json"))
    with pytest.raises(DestinationError, match="cannot create client"):
        dest.api  # noqa: B018 - building the session is what fails


def test_times_round_trip_as_the_client_library_writes_them() -> None:
    when = datetime(2031, 3, 11, 9, 30, 0, 123456, tzinfo=UTC)
    assert format_time(when) == "2031-03-11T09:30:00.123456Z"
    assert parse_time(format_time(when)) == when
    assert parse_time("2025-03-11T09:30:00.123456789Z") == when.replace(year=2025)
    assert parse_time("2025-03-11T09:30:00Z") == datetime(2025, 3, 11, 9, 30, tzinfo=UTC)
    assert parse_time(None) is None and parse_time("") is None
