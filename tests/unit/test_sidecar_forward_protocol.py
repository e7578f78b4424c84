"""Forward protocol v1 decoding: every mode, every time type, and refusals with reasons."""

from __future__ import annotations

import gzip
import hashlib

import msgpack
import pytest

from auditlock.sidecar.sources.forward import protocol
from auditlock.sidecar.sources.forward.protocol import ProtocolError

MAX = 1 << 20
T = 1_764_428_645  # 2025-11-29


def decode(frame: bytes) -> tuple[list[protocol.Entry], dict[str, object] | None]:
    unpacker = protocol.new_unpacker(MAX)
    unpacker.feed(frame)
    (message,) = list(unpacker)
    return protocol.decode_message(message, MAX)


def packed_entries(entries: list[list[object]]) -> bytes:
    return b"".join(msgpack.packb(e) for e in entries)


def test_message_mode_with_integer_time() -> None:
    entries, option = decode(msgpack.packb(["app.access", T, {"a": 1}]))
    assert entries == [("app.access", T * 1_000_000_000, {"a": 1})]
    assert option is None


def test_message_mode_with_float_time_and_chunk_option() -> None:
    frame = msgpack.packb(["t", T + 0.5, {"a": 1}, {"chunk": "abc"}])
    entries, option = decode(frame)
    assert entries[0][1] == T * 1_000_000_000 + 500_000_000
    assert option == {"chunk": "abc"}


def test_event_time_ext_keeps_nanoseconds() -> None:
    frame = msgpack.packb(["t", protocol.pack_event_time(T * 10**9 + 123_456_789), {"a": 1}])
    entries, _ = decode(frame)
    assert entries[0][1] == T * 10**9 + 123_456_789


def test_forward_mode() -> None:
    frame = msgpack.packb(["t", [[T, {"n": 1}], [T + 1, {"n": 2}]], {"chunk": "c1"}])
    entries, option = decode(frame)
    assert [e[2]["n"] for e in entries] == [1, 2]
    assert option == {"chunk": "c1"}


def test_packed_forward_as_bin() -> None:
    blob = packed_entries([[T, {"n": 1}], [T, {"n": 2}]])
    entries, _ = decode(msgpack.packb(["t", blob], use_bin_type=True))
    assert [e[2]["n"] for e in entries] == [1, 2]


def test_packed_forward_as_str_that_is_not_utf8() -> None:
    # What Fluentd's out_forward sends: the entries stream as a msgpack *str*. 0xc0/0xd3
    # bytes in it are not valid UTF-8.
    blob = packed_entries([[protocol.pack_event_time(T * 10**9), {"n": 1}], [T, {"n": -45}]])
    with pytest.raises(UnicodeDecodeError):
        blob.decode("utf-8")
    frame = msgpack.packb(["t", blob, {"chunk": "x", "size": 2}], use_bin_type=False)
    entries, option = decode(frame)
    assert [e[2]["n"] for e in entries] == [1, -45]
    assert option == {"chunk": "x", "size": 2}


def test_compressed_packed_forward_with_several_gzip_members() -> None:
    first = gzip.compress(packed_entries([[T, {"n": 1}]]))
    second = gzip.compress(packed_entries([[T, {"n": 2}], [T, {"n": 3}]]))
    frame = msgpack.packb(["t", first + second, {"compressed": "gzip"}], use_bin_type=True)
    entries, _ = decode(frame)
    assert [e[2]["n"] for e in entries] == [1, 2, 3]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("just a string", "bad_message"),
        (["t"], "bad_message"),
        ([1, T, {}], "bad_tag"),
        (["", T, {}], "bad_tag"),
        (["t", T], "bad_message"),
        (["t", -1, {}], "bad_time"),
        (["t", float("nan"), {}], "bad_time"),
        (["t", [[T]]], "bad_entry"),
        (["t", [["x", {}]]], "bad_time"),
        (["t", T, {}, "not-a-map"], "bad_option"),
        (["t", T, {}, {"chunk": 5}], "bad_option"),
        (["t", T, {}, {"chunk": "\udcff\udcfe"}], "invalid_utf8"),
        (["t", {"a": 1}], "bad_message"),
        (["t", b"\x93\x01", {}], "bad_entries"),
        (["t", b"abc", {"compressed": "zstd"}], "bad_option"),
        (["t", b"not gzip", {"compressed": "gzip"}], "bad_gzip"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(message: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_message(message, MAX)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_tag_with_invalid_utf8_is_refused() -> None:
    frame = b"\x93" + b"\xa2\xff\xfe" + msgpack.packb(T) + msgpack.packb({})
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.reason == "invalid_utf8"


def test_gzip_bomb_is_cut_off_at_the_limit() -> None:
    bomb = gzip.compress(b"\x00" * (4 * MAX))
    with pytest.raises(ProtocolError) as caught:
        protocol.gunzip(bomb, MAX)
    assert caught.value.reason == "too_large"


def test_oversized_frame_raises_buffer_full() -> None:
    unpacker = protocol.new_unpacker(1024)
    with pytest.raises(msgpack.BufferFull):
        unpacker.feed(msgpack.packb(["t", T, {"x": "a" * 4096}]))


def test_handshake_accepts_the_right_key_and_signs_the_pong() -> None:
    nonce = protocol.new_nonce()
    salt = b"0123456789abcdef"
    digest = hashlib.sha512(salt + b"client" + nonce + b"s3cret").hexdigest()
    ok, reason, pong = protocol.check_ping(
        ["PING", "client", salt, digest, "", ""], nonce, "s3cret", "server"
    )
    assert ok, reason
    answer = msgpack.unpackb(pong)
    assert answer[:4] == ["PONG", True, "", "server"]
    assert answer[4] == hashlib.sha512(salt + b"server" + nonce + b"s3cret").hexdigest()


def test_handshake_refuses_a_wrong_key() -> None:
    nonce = protocol.new_nonce()
    digest = hashlib.sha512(b"salt" + b"client" + nonce + b"wrong").hexdigest()
    ok, reason, pong = protocol.check_ping(
        ["PING", "client", "salt", digest, "", ""], nonce, "s3cret", "server"
    )
    assert not ok
    assert reason == "shared_key mismatch"
    assert msgpack.unpackb(pong)[1] is False


def test_helo_carries_the_nonce() -> None:
    nonce = protocol.new_nonce()
    name, options = msgpack.unpackb(protocol.helo(nonce))
    assert name == "HELO"
    assert options["nonce"] == nonce
