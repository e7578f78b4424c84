"""`make demo`: the whole auditlock chain on this machine, narrated, on embedded defaults.

It runs what tests/e2e/test_chain.py proves: a real kube-apiserver + etcd, the operator,
SeaweedFS with Object Lock, a pod whose collector is started exactly as the injection
webhook wrote it, events from fluent-logger and HTTP, a config-file change and a Secret
read seen by the API server's audit webhook, then `auditlock verify`. No cloud account,
no Docker.

When the local control plane or SeaweedFS cannot be had (say, no Go toolchain to build
kube-apiserver), it says so and runs the collector alone against a `file://` destination,
which is for development only (not WORM).

It ends at the auditor's desk: `auditlock report` over the app's and the cluster's trails
(out/demo/report.html) and `auditlock evidence` with a sample of 20 events and their
inclusion proofs (out/demo/evidence.tar.gz), checked with `auditlock verify-evidence`.

It leaves everything under --out (default out/demo): the app's trail copied from the
bucket as a folder you can verify again, the public keys, report.html, evidence.tar.gz
and report.md (the narration).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def run_cluster_demo(out: Path) -> list[str]:
    from tests.e2e.chain import Chain

    report: list[str] = []

    def narrate(message: str) -> None:
        say(message)
        report.append(f"- {message}")

    with Chain(out / "work", narrate=narrate) as chain:
        say("1/9 starting the local control plane and object storage")
        chain.start_servers()
        say("2/9 starting the operator (webhooks over TLS, audit intake) and its collector")
        chain.start_operator()
        say("3/9 applying AuditPolicy 'orders' (s3://, COMPLIANCE lock, 1 day)")
        chain.apply_policy(timeout=60)
        say("4/9 creating a pod the policy selects; the webhook injects the collector")
        chain.create_pod()
        chain.run_collector(timeout=60)
        say("5/9 the app emits events; its config changes; someone reads a Secret")
        chain.send_app_events(forward=200, http=50)
        chain.change_config_file()
        chain.read_secret()
        chain.privileged_activity()
        say("6/9 waiting for signed segments and checkpoints in the bucket")
        facts, _ = chain.wait_for_trail(timeout=30)
        chain.wait_for_cluster_event(
            lambda e: e["target"].get("resource") == "secrets" and e["action"] == "get",
            timeout=30,
        )
        for resource, action in (("rolebindings", "create"), ("pods/exec", "exec")):
            chain.wait_for_cluster_event(
                lambda e, r=resource, a=action: (
                    e["target"].get("resource") == r and e["action"] == a
                ),
                timeout=30,
            )
        narrate(
            "cluster: the Secret reads, the RoleBinding and the exec reached the operator's "
            "trail via the audit webhook"
        )
        say("7/9 verifying the trail the way an auditor would")
        key = chain.public_key_file()
        shutil.copy(key, out / "orders.pub.pem")
        result = chain.verify(
            chain.pod_prefix, "--public-key", str(key), "--require-retention", "1"
        )
        print(result.stdout.rstrip())
        if result.returncode != 0:
            raise RuntimeError(f"verify failed:\n{result.stdout}{result.stderr}")
        narrate(f"verify {chain.pod_prefix} --require-retention 1: PASS")
        certified = chain.certificates()
        holders = chain.namespace_private_keys()
        narrate(
            "per-pod keys: the collector's in-memory key "
            + ", ".join(f"{c.key_id[:16]}… (pod {c.subject.pod})" for c in certified)
            + " is certified by the operator's root key, which verify followed; namespace "
            + f"{chain.namespace} holds {len(holders)} private keys"
        )
        refused = chain.try_delete_locked(facts.segments[0])
        narrate(f"deleting a locked segment version: the server answers {refused}")
        tampered = chain.tampered_copy(facts.segments[0])
        bad = chain.verify(f"file://{tampered}", "--public-key", str(key))
        narrate(f"one byte changed in a copy: verify exits {bad.returncode} (FAIL, as it must)")
        say("8/9 stopping the collector cleanly (stream-closed checkpoint)")
        chain.stop_collector_gracefully()
        status = chain.wait_policy(lambda s: bool(s.get("lastCheckpoint")), timeout=30)
        narrate(f"policy status: lastCheckpoint {status.get('lastCheckpoint')}")
        chain.copy_trail(chain.pod_prefix, out / "trail")
        final = chain.verify(f"file://{out / 'trail'}", "--public-key", str(key))
        narrate(f"trail copied to {out / 'trail'}; verify there: exit {final.returncode}")
        if final.returncode != 0:
            raise RuntimeError(f"verify of the copied trail failed:\n{final.stdout}")
        # The cluster's stream stays open (its collector keeps checkpointing): the report
        # reads both trails from the bucket, as an auditor reviews a live trail.
        shutil.copy(chain.operator_public_key_file(), out / "operator.pub.pem")
        say("9/9 the auditor's desk: the report and an evidence package, from the bucket")
        auditor_outputs(
            out,
            [chain.pod_prefix, chain.cluster_prefix],
            [out / "orders.pub.pem", out / "operator.pub.pem"],
            narrate,
            env=chain.store_env(),
        )
    return report


def auditor_outputs(
    out: Path,
    urls: list[str],
    keys: list[Path],
    narrate: Callable[[str], None],
    env: dict[str, str] | None = None,
) -> None:
    """report.html over every trail; an evidence package of the first (an app's trail:
    the population an auditor samples), checked offline as an auditor would."""
    key_args = [arg for key in keys for arg in ("--public-key", str(key))]
    auditlock("report", *urls, *key_args, "--no-cache", "--out", str(out / "report.html"), env=env)
    narrate(f"report: {out / 'report.html'} (one self-contained HTML file; open it, print it)")
    auditlock(
        "evidence", urls[0], *key_args, "--no-cache", "--sample", "20", "--seed", "demo",
        "--out", str(out / "evidence.tar.gz"), env=env,
    )  # fmt: skip
    checked = auditlock("verify-evidence", str(out / "evidence.tar.gz"), *key_args)
    narrate(
        f"evidence: {out / 'evidence.tar.gz'}, 20 sampled events with inclusion proofs; "
        f"verify-evidence: {checked.split(':', 1)[0]}"
    )


def auditlock(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "auditlock", *args],
        capture_output=True, text=True, check=False, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"auditlock {args[0]} exited {result.returncode}:\n"
                           f"{result.stdout}{result.stderr}")  # fmt: skip
    return result.stdout


def run_file_demo(out: Path, why: str) -> list[str]:
    """The collector alone, writing to file:// — when no control plane can be had."""
    from fluent import sender
    from tests.servers.sidecar import SidecarProcess, make_config

    report = [
        f"- NOTE: {why}; ran the collector alone with a file:// destination "
        "(development only, not WORM)"
    ]
    say(report[0][2:])
    work = out / "work"
    trail = out / "trail"
    config = make_config(work, f"file://{trail}", ports=True)
    proc = SidecarProcess(work, config)
    ready = proc.start()
    report.append(f"- collector ready in {ready:.2f} s")
    say(report[-1][2:])
    logger = sender.FluentSender("demo", host="127.0.0.1", port=proc.forward_port)
    for i in range(200):
        logger.emit(
            "access",
            {"action": "orders.read", "actor": f"alice{i % 3}", "target": "orders"},
        )
    logger.close()
    report.append("- 200 events sent with fluent-logger")
    say(report[-1][2:])
    time.sleep(1.5)
    proc.terminate()
    shutil.copy(work / "key.pub.pem", out / "orders.pub.pem")
    result = subprocess.run(
        [sys.executable, "-m", "auditlock", "verify", f"file://{trail}",
         "--public-key", str(out / "orders.pub.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(result.stdout.rstrip())
    report.append(f"- verify file://{trail}: exit {result.returncode}")
    if result.returncode != 0:
        raise RuntimeError(f"verify failed:\n{result.stdout}{result.stderr}")

    def narrate(message: str) -> None:
        say(message)
        report.append(f"- {message}")

    auditor_outputs(out, [f"file://{trail}"], [out / "orders.pub.pem"], narrate)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mode = "cluster"
    try:
        from tests.servers.kube_assets import find_binary

        find_binary("kube-apiserver")
        find_binary("etcd")
        if shutil.which("unshare") is None:
            raise RuntimeError("util-linux `unshare` is missing")
    except Exception as exc:  # the reason is printed and the file:// demo runs instead
        mode = "file"
        report = run_file_demo(out, f"the local control plane is not available ({exc})")
    else:
        try:
            report = run_cluster_demo(out)
        except Exception:
            traceback.print_exc()
            say("the demo failed; see the traceback above and the logs under " + str(out))
            return 1
    elapsed = time.monotonic() - STARTED
    lines = [
        "# auditlock demo report",
        "",
        f"mode: {mode}; took {elapsed:.1f} s",
        "",
        *report,
        "",
        "Verify the copied trail yourself:",
        "",
        f"    .venv/bin/auditlock verify file://{out / 'trail'} --public-key "
        f"{out / 'orders.pub.pem'}",
        "",
        f"The auditor's report: {out / 'report.html'}; the evidence package, checked offline:",
        "",
        f"    .venv/bin/auditlock verify-evidence {out / 'evidence.tar.gz'} --public-key "
        f"{out / 'orders.pub.pem'}",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"mode": mode, "seconds": elapsed}))
    say(f"done in {elapsed:.1f} s; report: {out / 'report.html'}; trail: {out / 'trail'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
