"""The whole chain, policy to verified locked trail, on real servers (issue: end to end).

Real kube-apiserver + etcd, the operator in-process with its webhooks over TLS, SeaweedFS
with Object Lock, the collector started exactly as the admitted Pod says (tests/e2e/
podrun.py), fluent-logger and HTTP as the app, and the `auditlock verify` command.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.chain import COLLECTOR, Chain

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None, reason="needs util-linux unshare to run the collector"
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with Chain(tmp_path_factory.mktemp("e2e"), narrate=print) as c:
        c.start_servers()
        c.start_operator()
        yield c


def test_policy_to_verified_locked_trail(chain: Chain) -> None:
    status = chain.apply_policy(timeout=30)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["DestinationLocked"]["status"] == "True", conditions["DestinationLocked"]
    assert status["observedGeneration"] == 1

    pod = chain.create_pod()
    names = [c["name"] for c in pod["spec"].get("initContainers") or []]
    assert COLLECTOR in names, "the admitted pod carries the collector as a native sidecar"
    assert pod["metadata"]["annotations"]["auditlock.io/policy"] == "orders"

    chain.run_collector(timeout=30)
    sent = chain.send_app_events(forward=200, http=50)
    chain.change_config_file()
    chain.read_secret()

    # Within 10 s: every event, and the config change, in segments and checkpoints that
    # the server reports under COMPLIANCE lock.
    facts, elapsed = chain.wait_for_trail(timeout=10)
    ids = {e["event"].get("id") for e in facts.events}
    assert set(chain.sent_ids) <= ids, f"missing {len(set(chain.sent_ids) - ids)} of {sent}"
    assert elapsed <= 10
    config_events = [e["event"] for e in facts.events if e["event"]["category"] == "configuration"]
    assert config_events, "the ConfigMap change became a configuration event"
    assert "max_items" not in str(config_events), "config capture records hashes, not content"
    assert facts.segments and facts.checkpoints
    assert set(facts.modes.values()) == {"COMPLIANCE"}

    # The Secret read, seen by the API server's audit webhook, reached the operator's trail.
    secret_read = chain.wait_for_cluster_event(
        lambda e: (
            e["target"].get("resource") == "secrets"
            and e["target"].get("name") == "auditlock-s3"
            and e["action"] == "get"
            and e["details"].get("observed_by") == "kube-apiserver-audit"
        )
    )
    assert secret_read["event"]["actor"]["name"] == "admin"
    assert secret_read["event"]["target"]["namespace"] == chain.namespace

    key = chain.public_key_file()
    result = chain.verify(chain.pod_prefix, "--public-key", str(key), "--require-retention", "1")
    assert result.returncode == 0, result.stdout + result.stderr

    # Per-pod keys, the default: the collector's in-memory key is certified for its pod
    # (verify above followed that certificate to the root), and the audited namespace
    # holds no private key.
    certified = [(c.subject.pod, c.subject.stream) for c in chain.certificates()]
    assert certified == [("orders-0", chain.pod_stream())], certified
    assert chain.namespace_private_keys() == []

    assert chain.try_delete_locked(facts.segments[0]) == "AccessDenied"

    tampered = chain.tampered_copy(facts.segments[0])
    bad = chain.verify(f"file://{tampered}", "--public-key", str(key))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert facts.segments[0].split("/")[1] in bad.stdout + bad.stderr

    # The policy's status shows the last checkpoint it read from the destination.
    status = chain.wait_policy(lambda s: bool(s.get("lastCheckpoint")), timeout=15)
    assert status["lastCheckpoint"]


def test_collector_stops_cleanly_and_the_stream_is_closed(chain: Chain) -> None:
    if chain.collector is None:
        pytest.skip("the chain test did not start the collector")
    assert chain.stop_collector_gracefully() == 0
    key = chain.public_key_file()
    result = chain.verify(chain.pod_prefix, "--public-key", str(key), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    streams = {s["stream"]: s for s in json.loads(result.stdout)["streams"]}
    assert streams[chain.pod_stream()]["closed"] is True
