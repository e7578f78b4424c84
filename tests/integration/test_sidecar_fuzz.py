"""Bad input on the Forward port: random and mutated frames (hypothesis), oversized
frames, wrong types and invalid UTF-8, against a real sidecar process.

The suite sends 2,000 frames, drawn afresh on every run from the strategies below;
`AUDITLOCK_TEST_FUZZ_FRAMES=10000` (or more) is the long run, and a failure prints the
blob that reproduces it (docs/testing.md, "Fuzzing longer").

Each frame goes on its own connection. Whatever it is, the sidecar must either answer
(an ack for a valid chunk) or close that connection with a logged reason and a counter;
it must never crash, and a well-behaved client must keep getting acks throughout.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlock.sidecar.sources.forward import protocol
from tests.helpers.forward import first_answer
from tests.helpers.fuzz import exchange, mutate
from tests.servers.sidecar import (
    SidecarProcess,
    metric_value,
    module_collector,
)

T = 1_764_428_645
# Drawing the frames is most of this test's time (docs/testing.md), so the count sets it.
FRAMES = int(os.environ.get("AUDITLOCK_TEST_FUZZ_FRAMES", "2000"))
BATCH = 100

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), inner, max_size=4)
    ),
    max_leaves=6,
)
records = st.fixed_dictionaries(
    {"action": st.sampled_from(["read", "", 5]), "actor": st.sampled_from(["a", None, {}])},
    optional={"category": st.sampled_from(["access", "bogus"]), "x": values},
)
times = st.sampled_from([T, T + 0.5, -1, "now", None]) | st.builds(
    lambda ns: protocol.pack_event_time(ns), st.integers(0, 2**32 * 10**9 - 1)
)
options = st.none() | st.fixed_dictionaries(
    {}, optional={"chunk": st.text(min_size=1, max_size=8) | st.integers(-9, 99), "size": values,
                  "compressed": st.sampled_from(["gzip", "text", "zstd"])}
)  # fmt: skip


@st.composite
def valid_shaped(draw: Any) -> bytes:
    tag = draw(st.sampled_from(["app.access", "x", ""]) | st.text(max_size=8))
    mode = draw(st.sampled_from(["message", "forward", "packed"]))
    option = draw(options)
    if mode == "message":
        message: list[Any] = [tag, draw(times), draw(records | values)]
    elif mode == "forward":
        message = [tag, draw(st.lists(st.tuples(times, records).map(list), max_size=4))]
    else:
        entries = draw(st.lists(st.tuples(times, records).map(list), max_size=4))
        message = [tag, b"".join(msgpack.packb(e) for e in entries)]
    if option is not None:
        message.append(option)
    return bytes(msgpack.packb(message, use_bin_type=draw(st.booleans())))


@st.composite
def mutated(draw: Any) -> bytes:
    return mutate(draw, draw(valid_shaped()))


invalid_utf8 = st.builds(
    lambda junk: b"\x93" + b"\xa4" + junk + msgpack.packb(T) + msgpack.packb({"a": 1}),
    st.sampled_from([b"\xff\xfe\xfd\xfc", b"ab\xc3\x28", b"\xed\xa0\x80a"]),
)
frames = (
    st.binary(max_size=300)
    | values.map(lambda v: bytes(msgpack.packb(v)))
    | valid_shaped()
    | mutated()
    | invalid_utf8
)


def control_ack(port: int, chunk: str) -> Any:
    """A well-behaved client: one valid event with a chunk must be acked."""
    frame = msgpack.packb(
        ["app.access", T, {"action": "read", "actor": "ok", "target": "t"}, {"chunk": chunk}]
    )
    return first_answer(port, frame, timeout=10)


@pytest.fixture(scope="module")
def fuzz_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Any:
    sources = {"forward": {"max_frame_bytes": 1024 * 1024}}
    with module_collector(tmp_path_factory.mktemp("fuzz"), sources=sources) as proc:
        yield proc


@pytest.mark.slow
def test_thousands_of_random_and_mutated_frames(fuzz_sidecar: SidecarProcess) -> None:
    port = fuzz_sidecar.forward_port
    sent = 0
    started = time.monotonic()

    # Frames are drawn in batches of 100, each batch followed by a control client.
    @settings(
        max_examples=FRAMES // BATCH,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(frames, min_size=BATCH, max_size=BATCH))
    def send(batch: list[bytes]) -> None:
        nonlocal sent
        for frame in batch:
            answer = exchange(port, frame)
            sent += 1
            if answer:  # the only thing ever sent back without a handshake: acks
                unpacker = msgpack.Unpacker(raw=False)
                unpacker.feed(answer)
                assert all(isinstance(m, dict) and list(m) == ["ack"] for m in unpacker), answer
        assert fuzz_sidecar.proc is not None and fuzz_sidecar.proc.poll() is None
        assert control_ack(port, f"control-{sent}") == {"ack": f"control-{sent}"}

    send()
    assert sent >= FRAMES
    assert fuzz_sidecar.proc is not None and fuzz_sidecar.proc.poll() is None, fuzz_sidecar.tail()
    assert control_ack(port, "control-end") == {"ack": "control-end"}
    text = fuzz_sidecar.metrics()
    closed = metric_value(text, "auditlock_sidecar_forward_connections_closed_total")
    rejected = metric_value(text, "auditlock_sidecar_events_rejected_total")
    assert closed > FRAMES / 10, "bad frames should close their connections"
    assert rejected > 0
    log = fuzz_sidecar.log_path.read_text()
    assert "closing forward connection" in log
    assert "Traceback" not in log, fuzz_sidecar.tail(60)
    print(f"{sent} frames in {time.monotonic() - started:.1f}s; {closed:.0f} connections closed")


def test_oversized_frame_and_huge_declared_length(fuzz_sidecar: SidecarProcess) -> None:
    port = fuzz_sidecar.forward_port
    closed = "auditlock_sidecar_forward_connections_closed_total"
    before = fuzz_sidecar.metric(closed, reason="too_large")
    big = msgpack.packb(["app.access", T, {"action": "read", "blob": "a" * 3_000_000}])
    assert exchange(port, big) == b""
    # A str header claiming 4 GiB followed by more than the frame limit of bytes.
    assert exchange(port, b"\x93\xa1t\xdb\xff\xff\xff\xf0" + b"x" * 2_000_000) == b""
    after = fuzz_sidecar.metric(closed, reason="too_large")
    assert after - before == 2
    assert control_ack(port, "after-big") == {"ack": "after-big"}
