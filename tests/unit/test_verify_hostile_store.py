"""`auditlock verify` in front of a hostile store (issue 12 point 10, issue 13 point 1).

Each attack is run with the real command in a child process (a hang or a blow-up must be
seen as one: a timeout and the child's own peak RSS), and must end in findings that name
the object, never in a hang, a crash or memory growth.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditlock.cli.main import main as cli_main
from auditlock.ledger.escape import escape
from auditlock.ledger.limits import MAX_SEGMENT_BYTES
from auditlock.ledger.names import key_name
from tests.servers.auditlock_child import run_auditlock
from tests.servers.verify_child import VerifyHung, VerifyRun, run_verify_child

from .ledger_helpers import Ledger, new_ledger, write_stream

# verify's own peak on a small ledger is far below this (docs/benchmarks.md, "Verify's
# memory"); a read that followed /dev/zero or inflated the bomb would pass gigabytes.
RSS_LIMIT_MIB = 200
TIMEOUT_S = 60


def run_verify(ledger: Ledger, *extra: str, key: bool = True) -> VerifyRun:
    """The real `auditlock verify` in a child, with its peak RSS and a hang timeout."""
    args = ["verify", ledger.url, *extra]
    if key:
        args += ["--public-key", str(ledger.pub_path)]
    try:
        return run_verify_child(args, TIMEOUT_S)
    except VerifyHung as exc:
        pytest.fail(str(exc))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = new_ledger(tmp_path)
    write_stream(led, "app", events=40, per_segment=10)
    return led


def _replace(ledger: Ledger, name: str) -> Path:
    path = ledger.path(name)
    path.unlink()
    return path


def _assert_bounded(run: VerifyRun) -> None:
    assert run.peak_rss_mib < RSS_LIMIT_MIB, f"verify peaked at {run.peak_rss_mib:.0f} MiB"
    assert "Traceback" not in run.err, run.err


def test_segment_symlinked_to_dev_zero_is_not_read(ledger: Ledger) -> None:
    name = ledger.segments("app")[1]
    _replace(ledger, name).symlink_to("/dev/zero")
    run = run_verify(ledger, "--json")
    _assert_bounded(run)
    assert run.code == 1
    (finding,) = [f for f in run.json()["findings"] if f["object"] == name]
    assert finding["code"] == "segment-corrupt" and "symbolic link" in finding["message"]
    assert run.seconds < 20


def test_fifo_as_a_segment_does_not_hang(ledger: Ledger) -> None:
    name = ledger.segments("app")[2]
    os.mkfifo(_replace(ledger, name))
    run = run_verify(ledger, "--json")
    _assert_bounded(run)
    assert run.code == 1
    (finding,) = [f for f in run.json()["findings"] if f["object"] == name]
    assert finding["code"] == "segment-corrupt" and "a FIFO" in finding["message"]
    # the rest of the stream is still checked: the next checkpoint resynchronises
    assert run.json()["events_verified"] == 30


def test_gzip_bomb_stops_at_the_decompression_cap(ledger: Ledger) -> None:
    name = ledger.segments("app")[0]
    # 1 MiB of gzip that inflates to 1 GiB: far past the 64 MiB a segment may hold.
    # A full flush resets the compressor, so one compressed MiB repeats 1024 times.
    block = b"\n" * (1024 * 1024)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH) == unit
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # RFC 1952: deflate, no name
    trailer = struct.pack("<II", crc, 1024**3 % 2**32)
    bomb = header + unit * 1024 + deflate.flush() + trailer
    assert len(bomb) < 1024 * 1024 + 64 * 1024
    gz_name = name + ".gz"
    ledger.delete(name)
    ledger.write(gz_name, bomb)
    run = run_verify(ledger, "--json")
    _assert_bounded(run)
    assert run.code == 1
    (finding,) = [f for f in run.json()["findings"] if f["object"] == gz_name]
    assert finding["code"] == "segment-corrupt"
    assert f"more than {MAX_SEGMENT_BYTES} bytes" in finding["message"]


def test_oversized_object_is_refused_without_reading_it(ledger: Ledger) -> None:
    name = ledger.checkpoints("app")[2]
    path = _replace(ledger, name)
    with path.open("wb") as f:  # sparse: 4 GiB that cost no disk
        f.truncate(4 * 1024**3)
    run = run_verify(ledger, "--json")
    _assert_bounded(run)
    (finding,) = [f for f in run.json()["findings"] if f["object"] == name]
    assert finding["code"] == "checkpoint-corrupt"
    assert "larger than 65536 bytes" in finding["message"]


def test_symlinks_out_of_the_store_are_never_followed(ledger: Ledger, tmp_path: Path) -> None:
    secret = tmp_path / "secret.pem"
    secret.write_bytes(ledger.pub_path.read_bytes())  # a readable key outside the store
    key = key_name(ledger.signer.key_id)
    _replace(ledger, key).symlink_to(secret)
    seg = ledger.segments("app")[0]
    _replace(ledger, seg).symlink_to("/etc/passwd")
    (ledger.root / "streams" / "elsewhere").symlink_to(tmp_path)  # a directory link
    run = run_verify(ledger, "--json")
    _assert_bounded(run)
    doc = run.json()
    by_object = {f["object"]: f for f in doc["findings"]}
    assert by_object[key]["code"] == "key-corrupt"
    assert by_object[seg]["code"] == "segment-corrupt"
    assert by_object["streams/elsewhere"]["code"] == "unexpected-object"
    assert "root:" not in run.out  # nothing of /etc/passwd made it into the report


def test_object_names_with_terminal_escapes_are_shown_escaped(ledger: Ledger) -> None:
    planted = "streams/app/\x1b[2J\x1b[1;1HPASS\u202egnp.txt"
    ledger.write(planted, b"x")
    run = run_verify(ledger)
    assert run.code == 1
    assert "\x1b" not in run.out and "\u202e" not in run.out
    assert "\\x1b[2J\\x1b[1;1HPASS\\u202egnp.txt" in run.out
    doc = run_verify(ledger, "--json").json()
    assert planted in {f["object"] for f in doc["findings"]}


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_json_anywhere_is_a_finding_not_a_crash(ledger: Ledger) -> None:
    deep = _deep(100_000)
    ckpt = ledger.checkpoints("app")[1]
    ledger.write(ckpt, b'{"format":' + _deep(1000) + b"}\n" + b"A" * 88 + b"\n")
    other = key_name("0" * 64)
    rotation = f"keys/rotations/{ledger.signer.key_id}-{'0' * 64}.json"
    ledger.write(
        rotation, b'{"format":"auditlock/rotation/v1","time":' + deep[:9000] + b"}\nAA==\n"
    )
    seg = ledger.segments("app")[2]
    lines = ledger.read(seg).split(b"\n")
    # a line that fails its own check, so verify parses it to say why
    lines[3] = (
        b'{"epoch":0,"event":'
        + _deep(5000)
        + b',"prev":"'
        + b"0" * 64
        + b'","seq":23,"stream":"app"}'
    )
    ledger.write(seg, b"\n".join(lines))
    retention = ledger.root / ".retention" / (ledger.segments("app")[0] + ".json")
    retention.parent.mkdir(parents=True, exist_ok=True)
    retention.write_bytes(_deep(2000))
    run = run_verify(ledger, "--json")
    _assert_bounded(run)
    assert run.code == 1, run.err
    doc = run.json()
    by_object = {f["object"]: f["code"] for f in doc["findings"]}
    assert by_object[ckpt] == "checkpoint-corrupt"
    assert by_object[rotation] == "rotation-corrupt"
    line_findings = [f for f in doc["findings"] if f["first_seq"] == 23]
    # the envelope check and the event rules each say why, neither crashes
    line_codes = {f["code"] for f in line_findings}
    assert "line-corrupt" in line_codes and len(line_codes) == 2  # + the event rules' own
    assert "verify-error" not in {f["code"] for f in doc["findings"]}
    assert other not in by_object
    # the unreadable retention record is only a warning: no lock was asked for
    warned = {w["object"]: w["code"] for w in doc["warnings"]}
    assert warned[ledger.segments("app")[0]] == "retention-unreadable"
    strict = run_verify(ledger, "--json", "--require-retention", "1")
    strict_codes = {f["object"]: f["code"] for f in strict.json()["findings"]}
    assert strict_codes[ledger.segments("app")[0]] == "retention-unreadable"


def test_a_corrupt_retention_record_alone_does_not_fail_verification(ledger: Ledger) -> None:
    retention = ledger.root / ".retention" / (ledger.checkpoints("app")[0] + ".json")
    retention.parent.mkdir(parents=True, exist_ok=True)
    retention.write_bytes(b"{not json")
    run = run_verify(ledger)
    assert run.code == 0, run.out
    assert "warning:" in run.out and "retention-unreadable" in run.out


def test_a_verifier_crash_exits_3_with_a_json_document(ledger: Ledger) -> None:
    # Fault injection: the verifier itself raises (as a bug would); the command must not
    # look like "findings" (1) or like success, and --json still prints a document.
    code = (
        "import sys, auditlock.ledger.verify as v\n"
        "def boom(*a, **k):\n    raise RuntimeError('injected')\n"
        "v.verify = boom\n"
        "from auditlock.cli.main import main\n"
        f"sys.exit(main(['verify', {ledger.url!r}, '--json']))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert child.returncode == 3
    doc = json.loads(child.stdout)
    assert doc["result"] == "ERROR" and "injected" in doc["error"]
    usage = run_auditlock("verify", "file:///nonexistent/dir", "--json", timeout=TIMEOUT_S)
    assert usage.returncode == 2 and json.loads(usage.stdout)["result"] == "ERROR"
    help_text = run_auditlock("verify", "--help", timeout=TIMEOUT_S).stdout
    assert "3: the verifier itself failed" in " ".join(help_text.split())


def test_non_finite_options_are_usage_errors(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before the store is read: one interpreter runs all six, not six children.
    key = ["--public-key", str(ledger.pub_path)]
    for flag in ("--slack", "--require-retention"):
        for value in ("nan", "inf", "-1"):
            code = cli_main(["verify", ledger.url, *key, "--json", flag, value])
            out = capsys.readouterr().out
            assert code == 2 and json.loads(out)["result"] == "ERROR", (flag, value, out)


def test_prove_and_verify_proof_on_hostile_input(ledger: Ledger, tmp_path: Path) -> None:
    # prove reads the store like verify: a segment linked to /dev/zero is refused, not read
    seg = ledger.segments("app")[0]
    event_id = json.loads(ledger.read(seg).split(b"\n")[0])["event"]["id"]
    _replace(ledger, seg).symlink_to("/dev/zero")
    prove = run_auditlock("prove", ledger.url, event_id, timeout=TIMEOUT_S)
    assert prove.returncode == 1 and "symbolic link" in prove.stderr, prove.stderr
    # a proof file nested 100,000 deep is a usage error, not a RecursionError
    proof = tmp_path / "proof.json"
    proof.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    check = run_auditlock("verify-proof", str(proof), timeout=TIMEOUT_S)
    assert check.returncode == 2 and "Traceback" not in check.stderr, check.stderr


def test_a_file_name_that_is_not_utf8_is_reported_and_shown_escaped(ledger: Ledger) -> None:
    os.close(os.open(os.fsencode(ledger.root / "streams") + b"/\xff\x1b[31m", os.O_CREAT, 0o444))
    run = run_verify(ledger)
    assert run.code == 1, run.err
    assert "streams/\\udcff\\x1b[31m" in run.out and "\x1b" not in run.out
    assert "verify-error" not in run.out


@given(st.text())
def test_escaped_text_holds_no_character_a_terminal_acts_on(text: str) -> None:
    shown = escape(text)
    assert not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in shown
    )
    assert not set(shown) & set(
        "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
    )
    shown.encode("utf-8")  # printable on any UTF-8 terminal (no lone surrogates left)
