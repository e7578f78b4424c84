"""Forward intake against real clients and raw protocol frames, end to end to a verified ledger."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

from auditlock.sidecar.sources.forward import protocol
from tests.helpers.forward import forward_port, read_ack
from tests.servers.sidecar import (
    ledger_events,
    make_config,
    open_store,
    running_sidecar,
    stored_ledger,
)

T = 1_764_428_645


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {"action": "read", "actor": "alice", "target": f"orders/{n}", "n": n, **extra}


@asynccontextmanager
async def one_connection(
    tmp_path: Path,
) -> AsyncIterator[tuple[dict[str, Any], Any, asyncio.StreamReader, asyncio.StreamWriter]]:
    """An in-process collector with the default config and one Forward connection to it:
    the config, the collector, the connection's reader and writer (closed at the end)."""
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        reader, writer = await asyncio.open_connection("127.0.0.1", forward_port(sidecar))
        try:
            yield config, sidecar, reader, writer
        finally:
            writer.close()


def stored_details(config: dict[str, Any]) -> list[Any]:
    """The stored events' details.n, in the order the ledger holds them."""
    return [
        e["event"]["details"]["n"] for e in ledger_events(open_store(config["destination"]["url"]))
    ]


async def test_python_fluent_logger_events_reach_the_verified_ledger(tmp_path: Path) -> None:
    from fluent import sender

    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        port = forward_port(sidecar)

        def send() -> None:
            logger = sender.FluentSender("app", host="127.0.0.1", port=port)
            for n in range(500):
                assert logger.emit("access", record(n)), logger.last_error
            logger.close()

        await asyncio.to_thread(send)
        for _ in range(100):
            if (
                sidecar.spool.committed
                and sidecar.metrics.events_in.labels("forward")._value.get() >= 500
            ):
                break
            await asyncio.sleep(0.05)
    events, report = stored_ledger(config)
    assert sorted(e["event"]["details"]["n"] for e in events) == list(range(500))
    assert {e["event"]["details"]["intake"]["tag"] for e in events} == {"app.access"}
    assert report.events_verified == 500
    assert all(s.closed for s in report.streams)


async def test_packed_forward_with_non_utf8_str_entries_is_acked_after_spooling(
    tmp_path: Path,
) -> None:
    async with one_connection(tmp_path) as (config, sidecar, reader, writer):
        entries = b"".join(
            msgpack.packb([protocol.pack_event_time(T * 10**9 + n), record(n, category="data")])
            for n in range(100)
        )
        # use_bin_type=False: entries go out as msgpack str, as Fluentd's out_forward does.
        writer.write(msgpack.packb(["fluentd.data", entries, {"chunk": "c-1", "size": 100}],
                                   use_bin_type=False))  # fmt: skip
        await writer.drain()
        assert await read_ack(reader) == {"ack": "c-1"}
        assert sidecar.spool.committed >= 1  # durable before the ack
        # A retransmission of the same chunk is acknowledged but not stored twice.
        writer.write(msgpack.packb(["fluentd.data", entries, {"chunk": "c-1"}], use_bin_type=False))
        await writer.drain()
        assert await read_ack(reader) == {"ack": "c-1"}
        assert sidecar.metrics.duplicate_chunks._value.get() == 1
    events = ledger_events(open_store(config["destination"]["url"]))
    assert sorted(e["event"]["details"]["n"] for e in events) == list(range(100))
    assert events[5]["event"]["time"].endswith(".000000005Z")


async def test_forward_and_compressed_modes_with_acks(tmp_path: Path) -> None:
    import gzip

    async with one_connection(tmp_path) as (config, _, reader, writer):
        writer.write(msgpack.packb(["a.access", [[T, record(1)], [T + 0.25, record(2)]],
                                    {"chunk": "f-1"}]))  # fmt: skip
        blob = gzip.compress(b"".join(msgpack.packb([T, record(n)]) for n in (3, 4, 5)))
        writer.write(msgpack.packb(["a.access", blob, {"chunk": "z-1", "compressed": "gzip"}],
                                   use_bin_type=True))  # fmt: skip
        writer.write(msgpack.packb(["a.access", T, record(6), {"chunk": "m-1"}]))
        await writer.drain()
        acks = [await read_ack(reader) for _ in range(3)]
        assert acks == [{"ack": "f-1"}, {"ack": "z-1"}, {"ack": "m-1"}]
    assert sorted(stored_details(config)) == [1, 2, 3, 4, 5, 6]


async def test_shared_key_handshake(tmp_path: Path) -> None:
    config = make_config(tmp_path, sources={"forward": {"shared_key": "s3cret"}})
    async with running_sidecar(config) as sidecar:
        port = forward_port(sidecar)
        for key, expect_ok in (("s3cret", True), ("wrong", False)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            name, helo = await read_ack(reader)
            assert name == "HELO"
            salt = b"salt-0123456789a"
            digest = hashlib.sha512(salt + b"client" + helo["nonce"] + key.encode()).hexdigest()
            writer.write(msgpack.packb(["PING", "client", salt, digest, "", ""]))
            pong = await read_ack(reader)
            assert pong[0] == "PONG" and pong[1] is expect_ok
            if expect_ok:
                server = hashlib.sha512(
                    salt + b"auditlock-sidecar" + helo["nonce"] + b"s3cret"
                ).hexdigest()
                assert pong[4] == server
                writer.write(msgpack.packb(["x.access", T, record(1), {"chunk": "h-1"}]))
                assert await read_ack(reader) == {"ack": "h-1"}
            else:
                assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed
            writer.close()
        closed = sidecar.metrics.connections_closed.labels("auth_failed")._value.get()
        assert closed == 1


async def test_a_bad_frame_closes_only_its_connection(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        port = forward_port(sidecar)
        good_reader, good_writer = await asyncio.open_connection("127.0.0.1", port)
        bad_reader, bad_writer = await asyncio.open_connection("127.0.0.1", port)
        # A valid event first, then garbage on the same connection.
        bad_writer.write(msgpack.packb(["x.access", T, record(1), {"chunk": "before"}]))
        bad_writer.write(msgpack.packb([123, "not", "a", "message"]))
        await bad_writer.drain()
        assert await read_ack(bad_reader) == {"ack": "before"}
        assert await asyncio.wait_for(bad_reader.read(100), 5) == b""
        good_writer.write(msgpack.packb(["x.access", T, record(2), {"chunk": "after"}]))
        await good_writer.drain()
        assert await read_ack(good_reader) == {"ack": "after"}
        assert sidecar.metrics.connections_closed.labels("bad_tag")._value.get() == 1
        good_writer.close()
        bad_writer.close()


async def test_invalid_events_in_a_valid_chunk_are_counted_and_the_rest_stored(
    tmp_path: Path,
) -> None:
    async with one_connection(tmp_path) as (config, sidecar, reader, writer):
        entries = [[T, record(1)], [T, {"no": "action"}], [T, record(3, bad="\udcff")]]
        writer.write(msgpack.packb(["x.access", entries, {"chunk": "mixed"}],
                                   unicode_errors="surrogateescape"))  # fmt: skip
        await writer.drain()
        assert await read_ack(reader) == {"ack": "mixed"}
        rejected = sidecar.metrics.events_rejected
        assert rejected.labels("forward", "missing_field")._value.get() == 1
        assert rejected.labels("forward", "invalid_utf8")._value.get() == 1
    assert stored_details(config) == [1]


def test_oversized_frame_closes_the_connection(tmp_path: Path) -> None:
    async def main() -> None:
        config = make_config(tmp_path, sources={"forward": {"max_frame_bytes": 64 * 1024}})
        async with running_sidecar(config) as sidecar:
            port = forward_port(sidecar)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(msgpack.packb(["x.access", T, record(1, blob="a" * 200_000)]))
            with pytest.raises((ConnectionError, socket.error)):
                await writer.drain()
                data = await asyncio.wait_for(reader.read(100), 5)
                if data == b"":
                    raise ConnectionError("closed")
            assert sidecar.metrics.connections_closed.labels("too_large")._value.get() == 1

    asyncio.run(main())
