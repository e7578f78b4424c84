"""Property: whatever bytes a store holds, verify reports; it never raises, and it never
needs its last-resort `verify-error` (which would mean an input no rule foresaw)."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlock import sinks
from auditlock.ledger.rotation import publish_rotation
from auditlock.ledger.verify import VerifyOptions, verify

from .ledger_helpers import Ledger, make_signer, new_ledger, write_stream


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    led = new_ledger(tmp_path_factory.mktemp("pristine"))
    write_stream(led, "app", events=30, per_segment=10)
    # a rotation to a key that signs nothing yet, so its record is there to damage
    publish_rotation(led.dest, led.signer, make_signer().public, retention=None, time_ns=0)
    assert verify(led.dest, VerifyOptions(public_keys=[led.signer.public])).ok
    return led


_NESTED = st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
_JSONISH = st.sampled_from(
    [b'{"a":', b"[", b"]", b"{", b"}", b'"', b"\\u", b"\\ud800", b"1e999", b"-0", b"null",
     b'"format":"auditlock/checkpoint/v1"', b'"frontier":[', b"\n", b"\x00", b"\xff"]
)  # fmt: skip


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "cut", "splice", "nest", "garbage"]))
    if kind == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "cut":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        piece = b"".join(draw(st.lists(_JSONISH, min_size=1, max_size=8)))
        return data[:at] + piece + data[at:]
    if kind == "nest":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(_NESTED) + data[at:]
    return draw(st.binary(max_size=300))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_verify_reports_on_any_damaged_object(
    pristine: Ledger, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("fuzz") / "store"
    shutil.copytree(pristine.root, root)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    names = [n for n in names if not n.startswith(".")]
    name = data.draw(st.sampled_from(names), label="object")
    path = root / name
    original = path.read_bytes()
    damaged = data.draw(damage(original), label="bytes")
    path.chmod(0o644)
    path.write_bytes(damaged)
    report = verify(
        sinks.open(f"file://{root}"), VerifyOptions(public_keys=[pristine.signer.public])
    )
    codes = {f.code for f in report.findings}
    assert "verify-error" not in codes, report.summary()
    if damaged != original:
        assert not report.ok, (name, damaged[:200])
