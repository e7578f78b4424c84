"""The operator witnesses every stream (issue 17 points 3 and 4; docs/FORMAT.md section
16): on a short timer it reads each stream's newest checkpoint in the policy's
destination, closes the streams of pods gone for good, and stores a signed, chained
record there, each timestamped by a real RFC 3161 TSA (`openssl ts -reply`). `verify
--witness-key --tsa-cert` passes on the bucket and fails a copy from which a witnessed
stream was deleted, although that copy is consistent in itself.

Real components: the rig's kube-apiserver, the operator (in-process, kopf + webhooks),
SeaweedFS with Object Lock as the S3 destination, OpenSSL's TSA over HTTP. The stream is
written by a StreamWriter standing in for a collector (the collector's own path is
tested elsewhere; the witness only reads what is stored).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
from kubernetes import client

from auditlock import sinks
from auditlock.ledger.keys import Signer, generate, load_private_key
from auditlock.ledger.newest import newest_checkpoints
from auditlock.ledger.synth import synthetic_events
from auditlock.ledger.timestamps import parse_ns
from auditlock.ledger.trusted_time import load_certificates, request_token
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.witness import WitnessRecord, chain_end, decode_record, witnessed
from auditlock.ledger.writer import StreamWriter
from auditlock.operator import keys
from auditlock.operator.kube import Kube
from auditlock.operator.stream_ids import stream_id
from auditlock.operator.trail_verification import verify_policies
from auditlock.operator.witness import WitnessSettings
from tests.helpers.certificates import ask, collector_running, pod_token, request_body
from tests.helpers.policies import (
    create_pod,
    create_policy,
    create_s3_secret,
    s3_spec,
    wait_condition,
    wait_for,
)
from tests.helpers.trail import wait_abandoned, wait_abandoned_event
from tests.servers.auditlock_operator import (
    RunningOperator,
    operator_collector_process,
    start_operator,
)
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import ledger_events
from tests.servers.tsa import OpensslTsa

INTERVAL = 1.0


def _witness_key(kube: KubeControlPlane, namespace: str) -> Signer:
    """The operator's key, in a Secret as the chart keeps it (ed25519.pem)."""
    material = keys.generate()
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            {"metadata": {"name": "operator-key"}, "type": "Opaque",
             "data": material.secret_data()},
        )  # fmt: skip
    return Signer(load_private_key(material.private_pem))


def _witness_operator(
    kube: KubeControlPlane, namespace: str, seaweedfs: SeaweedFS, **options: Any
) -> tuple[Signer, RunningOperator]:
    """An operator that runs the witness with its key in a Secret (as the chart keeps it)
    over `namespace` only, with SeaweedFS credentials there: its key and the operator."""
    signer = _witness_key(kube, namespace)
    create_s3_secret(kube, namespace, seaweedfs)
    operator = start_operator(
        kube,
        audit_intake=False,
        register=False,
        watch_fallback=False,
        namespaces=[namespace],
        witness_key_secret=(namespace, "operator-key"),
        **options,
    )
    return signer, operator


def _records(store: sinks.Destination) -> list[str]:
    return [n for n in store.list("witness/rig/") if n.endswith(".json")]


def test_the_operator_witnesses_every_stream_with_trusted_time(
    auditpolicy_crd: KubeControlPlane,
    kube_namespace: str,
    seaweedfs: SeaweedFS,
    s3_locked_bucket: str,
    openssl_tsa: OpensslTsa,
    tmp_path: Path,
) -> None:
    kube = auditpolicy_crd
    openssl_tsa.mode = "honest"
    namespace = kube_namespace
    signer, operator = _witness_operator(
        kube, namespace, seaweedfs, witness=WitnessSettings(INTERVAL, openssl_tsa.url)
    )
    own_trail = ExitStack()
    try:
        # The operator's own collector: each record also goes into its cluster stream.
        own_store = own_trail.enter_context(
            operator_collector_process(operator.collector_port, tmp_path / "operator")
        )
        create_policy(kube, namespace, "seen", s3_spec(seaweedfs, s3_locked_bucket))
        wait_condition(kube, namespace, "seen", "Ready", "True")
        store = sinks.open(f"s3://{s3_locked_bucket}/trail", **seaweedfs.destination_options())
        # The streams are signed with a key the policy's trail verifies under: with per-pod
        # keys (the default) its published key is the operator's root.
        assert operator.root is not None
        writer_key = operator.root
        for stream in ("rig_ns_a", "rig_ns_b"):
            writer = StreamWriter.resume(store, stream, writer_key, retention=None)
            writer.store(writer.heartbeat())
            for _, event in synthetic_events(stream, 3, start_ns=time.time_ns()):
                writer.append(event)
            writer.store(writer.seal())
        tips = newest_checkpoints(store)

        def settled() -> list[WitnessRecord] | None:
            """Every record so far, once both streams' newest checkpoints were named and a
            later record named nothing (each names only what changed)."""
            records = [decode_record(store.get(name)).record for name in _records(store)]
            last = {e.stream: e.digest for record in records for e in record.streams}
            caught_up = last == {s: t.digest for s, t in tips.items()}
            return records if caught_up and records[-1].streams == () else None

        records = wait_for("the witness to catch up", settled, timeout=30)
        newest = records[-1]
        assert newest.key_id == signer.key_id
        assert chain_end(store, "rig").seq == newest.seq + 1
        assert store.get(_records(store)[-1] + ".tsr")  # a token beside each record
        metrics = operator.thread.operator.metrics
        assert metrics.get_sample_value("auditlock_operator_witness_cycles_total") >= 2
        newest_digest = hashlib.sha256(store.get(_records(store)[-1]).split(b"\n")[0]).hexdigest()

        def in_own_stream() -> dict[str, object] | None:
            events = ledger_events(sinks.open(f"file://{own_store}"))
            return next(
                (e["event"]["details"]["witness"] for e in events
                 if e["event"]["action"] == "witness.recorded"
                 and e["event"]["details"]["witness"]["digest"] == newest_digest),
                None,
            )  # fmt: skip

        traced = wait_for("the newest record in the operator's stream", in_own_stream, 30)
        assert traced["seq"] == newest.seq
        assert traced["destination"] == f"s3://{s3_locked_bucket}/trail"

        # Continuous verification checks the witness too (the chart's verify.witnessPublicKey).
        env = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key,
               "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}  # fmt: skip
        with mock.patch.dict(os.environ, env), kube.api_client() as api:
            (verdict,) = verify_policies(
                Kube(api), namespaces={namespace}, slack_seconds=600, witness_keys=[signer.public]
            )
            assert verdict.record["result"] == "PASS", verdict.record
            (verdict,) = verify_policies(
                Kube(api), namespaces={namespace}, slack_seconds=600,
                witness_keys=[writer_key.public],
            )  # fmt: skip
            # Records under another key are another operator's: nothing of ours witnessed.
            assert verdict.record["reason"] == "WitnessMissing", verdict.record
    finally:
        operator.stop()
        own_trail.close()

    tsa_roots = load_certificates(openssl_tsa.root_pem)
    options = VerifyOptions(
        public_keys=[writer_key.public],
        witness_keys=[signer.public],
        tsa_certificates=tsa_roots,
        slack_seconds=600,
        check_retention=False,
    )
    report = verify(store, options)
    assert report.findings == [], [f.describe() for f in report.findings]
    assert "timestamp-missing" not in {w.code for w in report.warnings}

    # A copy without one witnessed stream is consistent in itself, but not to the witness.
    copy = sinks.open(f"file://{tmp_path / 'copy'}")
    for name in store.list(""):
        if not name.startswith("streams/rig_ns_b/"):
            copy.put(name, store.get(name), None)
    alone = verify(copy, VerifyOptions(public_keys=[writer_key.public], slack_seconds=600))
    assert alone.findings == []
    witnessed = verify(copy, options)
    assert {(f.code, f.stream) for f in witnessed.findings} == {
        ("witness-missing-checkpoint", "rig_ns_b")
    }, [f.describe() for f in witnessed.findings]
    assert witnessed.to_json()["witness"] == witnessed.witness


def test_a_backdated_or_foreign_token_is_reported(openssl_tsa: OpensslTsa, tmp_path: Path) -> None:
    """A record that claims an hour ago but reached the TSA now was backdated; a token
    over other bytes is not this record's; a record without one is a warning."""
    openssl_tsa.mode = "honest"
    store = sinks.open(f"file://{tmp_path / 'store'}")
    writer = StreamWriter.resume(store, "rig_ns_a", Signer(generate()), retention=None)
    writer.store(writer.heartbeat())
    operator_key = Signer(generate())
    end = chain_end(store, "rig")
    names = []
    for age_minutes in (60, 0, 0):
        name, data = end.record(
            "rig",
            operator_key,
            witnessed(newest_checkpoints(store).values()),
            time_ns=time.time_ns() - age_minutes * 60 * 10**9,
            interval_ms=60_000,
        )
        store.put(name, data, None)
        names.append((name, data))
        end = end.after(data)
    store.put(names[0][0] + ".tsr", _token(openssl_tsa, names[0][1]), None)
    store.put(names[1][0] + ".tsr", _token(openssl_tsa, b"other bytes"), None)
    report = verify(
        store,
        VerifyOptions(
            witness_keys=[operator_key.public],
            tsa_certificates=load_certificates(openssl_tsa.root_pem),
            slack_seconds=30,
        ),
    )
    found = {(f.code, f.object) for f in report.findings}
    assert found == {
        ("timestamp-late", names[0][0] + ".tsr"),
        ("timestamp-mismatch", names[1][0] + ".tsr"),
    }, found
    assert {(w.code, w.object) for w in report.warnings} >= {("timestamp-missing", names[2][0])}


def _token(tsa: OpensslTsa, message: bytes) -> bytes:
    async def ask() -> bytes:
        async with aiohttp.ClientSession() as session:
            return await request_token(session, tsa.url, message, time_limit=30)

    return asyncio.run(ask())


GRACE = 2.0


def test_the_witness_closes_the_stream_of_a_pod_gone_for_good(
    auditpolicy_crd: KubeControlPlane,
    kube_namespace: str,
    seaweedfs: SeaweedFS,
    s3_locked_bucket: str,
) -> None:
    """Issue 17 point 3: whichever replica runs the witness cycle closes, in that cycle and
    off its own reading, the stream of a pod deleted for good once the grace delay has
    passed (the periodic refresh, here every 10 minutes, leaves it to the witness); the
    record it stores next names the `abandon` checkpoint, and no record names the stream
    again. verify with the root and the witness key finds nothing: the stream is
    closed-abandoned, with FORMAT.md's warning `abandoned` only."""
    kube, namespace = auditpolicy_crd, kube_namespace
    signer, operator = _witness_operator(
        kube,
        namespace,
        seaweedfs,
        refresh_seconds=600,
        abandon_grace_seconds=GRACE,
        witness=WitnessSettings(INTERVAL),
    )
    assert operator.root is not None
    try:
        create_policy(kube, namespace, "gone", s3_spec(seaweedfs, s3_locked_bucket))
        wait_condition(kube, namespace, "gone", "Ready", "True")
        store = sinks.open(f"s3://{s3_locked_bucket}/trail", **seaweedfs.destination_options())
        # A collector's per-pod key, certified by the operator for its pod's stream.
        pod = create_pod(kube, namespace, {"app": "payments"})
        collector_running(kube, pod)
        stream = stream_id("rig", namespace, pod["metadata"]["name"])
        key = Signer(generate())
        ca = ssl.create_default_context(cafile=str(kube.ca_path))
        status, answer = ask(operator.webhook_url, ca, pod_token(kube, pod),
                             request_body(key, stream))  # fmt: skip
        assert status == 201, answer
        writer = StreamWriter.resume(store, stream, key, retention=None)
        for _, event in synthetic_events(stream, 3, start_ns=time.time_ns()):
            writer.append(event)
        writer.store(writer.seal())  # ... and then the collector is killed: no `close`

        def records() -> list[WitnessRecord]:
            found = [decode_record(store.get(name)).record for name in _records(store)]
            return sorted(found, key=lambda r: r.seq)

        def naming() -> list[tuple[WitnessRecord, int]]:
            return [(r, e.index) for r in records() for e in r.streams if e.stream == stream]

        wait_for("a record naming the stream", naming, timeout=30)
        with kube.api_client() as api:
            client.CoreV1Api(api).delete_namespaced_pod(
                pod["metadata"]["name"], namespace, grace_period_seconds=0
            )

        abandon = wait_abandoned(store, stream)
        assert abandon.signed is not None
        closed_at = parse_ns(abandon.signed.checkpoint.time)

        def two_records_after() -> list[WitnessRecord] | None:
            later = [r for r in records() if parse_ns(r.time) >= closed_at]
            return later if len(later) >= 2 else None

        later = wait_for("two records after the close", two_records_after, timeout=30)
        # The cycle that closed it stored the first record after the close, naming it.
        assert [(e.stream, e.index) for e in later[0].streams] == [(stream, abandon.index)]
        assert [index for _, index in naming()].count(abandon.index) == 1
        assert naming()[-1][1] == abandon.index  # never named again
        metrics = operator.thread.operator.metrics
        closes = metrics.get_sample_value(
            "auditlock_operator_streams_abandoned_total", {"outcome": "abandoned"}
        )
        assert closes == 1

        wait_abandoned_event(kube, namespace, stream)
    finally:
        operator.stop()

    report = verify(
        store,
        VerifyOptions(
            public_keys=[operator.root.public],
            witness_keys=[signer.public],
            slack_seconds=600,
            check_retention=False,
        ),
    )
    assert report.findings == [], [f.describe() for f in report.findings]
    (summary,) = [s for s in report.streams if s.stream == stream]
    assert summary.abandoned and summary.events == 3
    assert {w.code for w in report.warnings if w.stream == stream} == {"abandoned"}
