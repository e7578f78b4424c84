"""What every WORM destination does alike, run against each real server: SeaweedFS for
s3:// and fake-gcs-server for gs:// (what each enforces of retention is in its own
module, test_sinks_s3.py and test_sinks_gcs.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from auditlock import sinks
from auditlock.sinks import (
    Destination,
    DestinationError,
    LockMode,
    ObjectNotFound,
    ObjectUnreadable,
    RetentionSpec,
)
from auditlock.sinks.gcs import GCSDestination
from auditlock.sinks.s3 import S3Destination
from tests.servers.managed import ObjectStoreServer

LOCKED_1D = RetentionSpec(period=timedelta(days=1), mode=LockMode.LOCKED)

OpenDestination = Callable[..., Destination]
SERVERS = {"s3": "seaweedfs", "gs": "fake_gcs"}


@pytest.fixture(params=["s3", "gs"])
def open_destination(request: pytest.FixtureRequest) -> OpenDestination:
    """Opens `<scheme>://<a fresh bucket>/trail` on the session's server for the scheme."""
    server: ObjectStoreServer = request.getfixturevalue(SERVERS[request.param])
    bucket = server.make_bucket()
    return lambda **extra: server.destination(bucket, **extra)


@pytest.mark.parametrize(("scheme", "kind"), [("s3", S3Destination), ("gs", GCSDestination)])
def test_the_url_scheme_picks_the_destination(
    request: pytest.FixtureRequest, scheme: str, kind: type[Destination]
) -> None:
    server: ObjectStoreServer = request.getfixturevalue(SERVERS[scheme])
    assert isinstance(server.destination("bucket"), kind)


def test_missing_object(open_destination: OpenDestination) -> None:
    dest = open_destination()
    with pytest.raises(ObjectNotFound):
        dest.get("absent")
    with pytest.raises(ObjectNotFound):
        dest.retention("absent")


def test_close_releases_the_client_and_the_destination_reopens(
    open_destination: OpenDestination,
) -> None:
    dest = open_destination()
    dest.put("a", b"1", LOCKED_1D)
    dest.close()
    assert dest.get("a") == b"1"  # a new client on next use
    dest.close()


def test_get_reads_no_more_than_the_cap(open_destination: OpenDestination) -> None:
    # verify reads every object with the size FORMAT.md allows for it: a planted large
    # object is refused, not downloaded whole
    dest = open_destination()
    data = bytes(range(256)) * 8192  # 2 MiB
    dest.put("streams/a/big", data, LOCKED_1D)
    assert dest.get("streams/a/big", max_bytes=len(data)) == data
    with pytest.raises(ObjectUnreadable, match=f"larger than {len(data) - 1} bytes"):
        dest.get("streams/a/big", max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    "url", ["s3://bucket/p?endpont=http://x", "gs://bucket/p?endpint=x"], ids=["s3", "gs"]
)
def test_unknown_url_parameter_is_refused(url: str) -> None:
    scheme = url.split(":", 1)[0]
    with pytest.raises(DestinationError, match=f"unknown {scheme}:// URL parameter"):
        sinks.open(url)
