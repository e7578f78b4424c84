"""The gaps FORMAT.md closed (issue 13.4), each decided, written and checked by verify.

Objects here are signed with the trusted key where the rule is about content, so only
the rule itself can catch them.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import re
from pathlib import Path

import pytest

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.checkpoint import decode_checkpoint, encode_checkpoint
from auditlock.ledger.names import segment_name
from auditlock.ledger.rotation import FORMAT as ROTATION_FORMAT
from auditlock.ledger.rotation import publish_rotation
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import StreamWriter

from .ledger_helpers import Ledger, join_lines, lines_of, make_signer, new_ledger, write_stream

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = new_ledger(tmp_path)
    write_stream(led, "app", events=20, per_segment=10)
    return led


def _codes(ledger: Ledger, *extra: str) -> tuple[int, list[str], list[str], dict[str, object]]:
    code, out = ledger.verify("--json", *extra)
    report = json.loads(out)
    return (
        code,
        [f["code"] for f in report["findings"]],
        [w["code"] for w in report["warnings"]],
        report,
    )


def _resign(ledger: Ledger, name: str, **changes: object) -> None:
    cp = decode_checkpoint(ledger.read(name)).checkpoint
    data, _ = encode_checkpoint(dataclasses.replace(cp, **changes), ledger.signer)  # type: ignore[arg-type]
    ledger.write(name, data)


def test_signature_with_non_zero_pad_bits_is_corrupt(ledger: Ledger) -> None:
    name = ledger.checkpoints("app")[1]
    body, sig, _ = ledger.read(name).split(b"\n")
    # 64 bytes end in one byte: two base64 characters and "==". The second character
    # carries 2 bits of that byte and 4 pad bits; flipping a pad bit keeps the bytes.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3:-2])
    forged = sig[:-3] + alphabet[last ^ 1 : (last ^ 1) + 1] + b"=="
    assert base64.b64decode(forged) == base64.b64decode(sig) and forged != sig
    ledger.write(name, body + b"\n" + forged + b"\n")
    code, findings, _, report = _codes(ledger)
    assert code == 1 and "checkpoint-corrupt" in findings
    assert "canonical base64" in json.dumps(report)


def test_index_0_is_always_genesis_and_genesis_only_index_0(ledger: Ledger) -> None:
    names = ledger.checkpoints("app")
    _resign(ledger, names[0], kind="seal")
    code, findings, _, report = _codes(ledger)
    assert code == 1 and findings[0] == "checkpoint-corrupt", report
    assert "genesis" in report["findings"][0]["message"]  # type: ignore[index]


def test_heartbeat_below_the_lower_bound_is_corrupt(ledger: Ledger) -> None:
    name = ledger.checkpoints("app")[-1]
    _resign(ledger, name, heartbeat_ms=999)
    code, findings, _, report = _codes(ledger)
    assert code == 1 and "checkpoint-corrupt" in findings
    assert "heartbeat_ms 999 is below 1000" in json.dumps(report)


def test_writer_never_promises_less_than_the_lower_bound(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    writer = StreamWriter.resume(
        led.dest, "s", led.signer, retention=None, heartbeat_seconds=0.001,
        clock=SimulatedClock(1_767_225_600_000_000_000),
    )  # fmt: skip
    assert writer.heartbeat_ms == 1000


def test_heartbeat_that_grows_the_tree_is_a_finding(tmp_path: Path) -> None:
    """A writer holding the key cuts a segment and calls the checkpoint a heartbeat."""
    led = new_ledger(tmp_path)
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = led.writer("app", clock=clock)
    for _, event in synthetic_events("app", 3):
        writer.append(event)
    clock.now += 1_000_000_000
    writer.store(writer._preamble() + writer._cut_segments() + [writer._checkpoint("heartbeat")])
    clock.now += 1_000_000_000
    writer.store(writer.close())
    code, findings, _, _ = _codes(led)
    assert code == 1 and findings == ["heartbeat-grew"]


def test_prev_is_compared_with_the_stored_body_of_an_invalid_predecessor(
    ledger: Ledger,
) -> None:
    """Checkpoint 2's signature is broken; checkpoint 3's prev still names its stored
    body, so only the signature is a finding (FORMAT.md 11.3.1)."""
    name = ledger.checkpoints("app")[2]
    body = ledger.read(name).split(b"\n")[0]
    bad = base64.b64encode(bytes(64))
    ledger.write(name, body + b"\n" + bad + b"\n")
    code, findings, _, _ = _codes(ledger)
    assert code == 1 and findings == ["bad-signature"]


def test_prev_after_an_unparseable_predecessor_is_not_judged(ledger: Ledger) -> None:
    name = ledger.checkpoints("app")[2]
    ledger.write(name, b"garbage\n")
    code, findings, _, _ = _codes(ledger)
    assert code == 1 and findings == ["checkpoint-corrupt"]


def test_segment_named_first_after_last(ledger: Ledger) -> None:
    first = ledger.segments("app")[0]
    ledger.write(segment_name("app", 0, 9, 3, compressed=False), ledger.read(first))
    code, findings, _, _ = _codes(ledger)
    assert code == 1 and findings == ["segment-name"]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(lambda data: gzip.compress(b"", mtime=0), id="second gzip member"),
        pytest.param(lambda data: b"\x00" * 8, id="trailing bytes"),
    ],
)
def test_gzip_segment_is_exactly_one_member(ledger: Ledger, extra: object) -> None:
    plain = ledger.segments("app")[0]
    data = ledger.read(plain)
    ledger.delete(plain)
    ledger.write(plain + ".gz", gzip.compress(data, mtime=0) + extra(data))  # type: ignore[operator]
    code, findings, _, report = _codes(ledger)
    assert code == 1 and "segment-corrupt" in findings, report
    assert "after its gzip member" in json.dumps(report)


def test_symlink_and_fifo_are_not_objects(ledger: Ledger, tmp_path: Path) -> None:
    seg = ledger.segments("app")[0]
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(ledger.read(seg))
    ledger.delete(seg)
    os.symlink(outside, ledger.path(seg))
    fifo = ledger.checkpoints("app")[-1]
    ledger.delete(fifo)
    os.mkfifo(ledger.path(fifo))
    code, findings, _, report = _codes(ledger)  # a FIFO read would block: it must not
    assert code == 1, report
    assert "segment-corrupt" in findings and "checkpoint-corrupt" in findings
    text = json.dumps(report)
    assert "symbolic link" in text and "not a regular file" in text


def test_rotation_body_must_be_canonical_with_exact_members(ledger: Ledger) -> None:
    new = make_signer()
    names = publish_rotation(
        ledger.dest, ledger.signer, new.public, retention=None, time_ns=1_767_225_600_000_000_000
    )
    assert _codes(ledger)[0] == 0
    record = names[2]
    body = json.loads(ledger.read(record).split(b"\n")[0])
    assert body["format"] == ROTATION_FORMAT
    for forged in (
        json.dumps(dict(reversed(body.items())), separators=(",", ":")).encode(),  # unsorted
        canonical_bytes({**body, "note": "x"}),
    ):
        ledger.write(record, forged + b"\n" + base64.b64encode(ledger.signer.sign(forged)) + b"\n")
        code, findings, _, _ = _codes(ledger)
        assert code == 1 and findings == ["rotation-corrupt"]


def test_corrupt_retention_record_fails_only_when_retention_is_required(ledger: Ledger) -> None:
    name = ledger.checkpoints("app")[0]
    meta = ledger.root / ".retention" / (name + ".json")
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_bytes(b"{not json")
    code, findings, warnings, _ = _codes(ledger)
    assert code == 0 and warnings == ["retention-unreadable"]
    code, findings, _, _ = _codes(ledger, "--require-retention", "1")
    assert code == 1 and "retention-unreadable" in findings


def test_repeated_id_in_a_later_epoch_is_reported(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    write_stream(led, "app", events=3, per_segment=3)  # closed: the next run is epoch 1
    write_stream(led, "app", events=3, per_segment=3, start_ns=1_767_225_700_000_000_000)
    code, _, warnings, report = _codes(led)
    assert code == 0 and warnings.count("duplicate-id") == 3, report


def _emitted_codes() -> set[str]:
    ledger = ROOT / "src" / "auditlock" / "ledger"
    codes: set[str] = set()
    for path in ledger.glob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r"(?:find|_warn|report)\(\s*\"([a-z]+(?:-[a-z]+)+|[a-z]+)\"", text))
        codes |= set(re.findall(r"code = \"([a-z-]+)\"", text))
        codes |= set(re.findall(r"return \"([a-z]+-[a-z-]+)\", ", text))
        codes |= set(re.findall(r"warn\(seq, \"([a-z-]+)\"", text))
    return codes


def test_every_code_verify_emits_is_in_format_md() -> None:
    codes = _emitted_codes()
    once_unlisted = {"no-checkpoint", "segment-name", "truncated-report", "retention-unreadable"}
    new = {"event-invalid", "line-not-canonical", "duplicate-id", "heartbeat-grew"}
    assert once_unlisted | new <= codes
    spec = (ROOT / "docs" / "FORMAT.md").read_text()
    section = spec[spec.index("## 11. Verification") : spec.index("## 12.")]
    missing = sorted(c for c in codes if f"`{c}`" not in section)
    assert not missing, f"emitted but not in FORMAT.md section 11: {missing}"


def test_tampered_lines_helper_round_trip(ledger: Ledger) -> None:
    """join_lines/lines_of keep a segment byte for byte (the helpers the tests rely on)."""
    seg = ledger.segments("app")[0]
    assert join_lines(lines_of(ledger.read(seg))) == ledger.read(seg)
