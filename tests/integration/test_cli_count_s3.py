"""`auditlock count` on S3 (SeaweedFS), reached the way the kind quickstart reaches the
demo store: the endpoint in the URL's query, only the credentials in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from auditlock.ledger.synth import synthetic_events
from tests.servers.seaweedfs import SeaweedFS


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "auditlock", *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_count_reads_a_compressed_s3_trail_named_by_an_endpoint_url(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    store = f"s3://{seaweedfs.make_bucket()}/orders"
    full = seaweedfs.env()
    keys = tmp_path / "keys"
    assert _run(full, "keys", "generate", "--out", str(keys)).returncode == 0
    written = _run(
        full, "synth", "--store", store, "--key", str(keys / "signing.key"), "--streams", "2",
        "--events", "250", "--segment-events", "100", "--compress", "--retention-days", "1",
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    expected: Counter[str] = Counter()
    for k in range(2):
        expected.update(e["category"] for _, e in synthetic_events(f"synth-0-{k:04d}", 250))
    credentials = {
        "AWS_ACCESS_KEY_ID": full["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": full["AWS_SECRET_ACCESS_KEY"],
    }
    url = f"{store}?endpoint={seaweedfs.endpoint}&region={seaweedfs.region}"
    counted = _run(credentials, "count", url, "--require", "access", "--require", "data", "--json")
    assert counted.returncode == 0, counted.stdout + counted.stderr
    report = json.loads(counted.stdout)
    assert report["events"] == 500 and report["streams"] == 2 and report["missing"] == []
    assert report["categories"] == {c: expected.get(c, 0) for c in report["categories"]}
    # An empty prefix of the same bucket: reachable, but nothing arrived.
    empty = url.replace("/orders?", "/nothing?")
    missing = _run(credentials, "count", empty, "--require", "access")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "FAIL: no access events are stored under" in missing.stdout
