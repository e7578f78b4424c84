"""`make demo`: the whole auditlock chain on this machine, narrated, on embedded defaults.

It runs what tests/e2e/test_chain.py proves: a real kube-apiserver + etcd, the operator,
SeaweedFS with Object Lock, a pod whose collector is started exactly as the injection
webhook wrote it, events from fluent-logger and HTTP, a config-file change and a Secret
read seen by the API server's audit webhook, then `auditlock verify`. No cloud account,
no Docker.

When the local control plane or SeaweedFS cannot be had (say, no Go toolchain to build
kube-apiserver), it says so and runs the collector alone against a `file://` destination,
which is for development only (not WORM).

It leaves everything under --out (default out/demo): the trail copied from the bucket
as a folder you can verify again, the public key, and report.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
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
        say("1/8 starting the local control plane and object storage")
        chain.start_servers()
        say("2/8 starting the operator (webhooks over TLS, audit intake) and its collector")
        chain.start_operator()
        say("3/8 applying AuditPolicy 'orders' (s3://, COMPLIANCE lock, 1 day)")
        chain.apply_policy(timeout=60)
        say("4/8 creating a pod the policy selects; the webhook injects the collector")
        chain.create_pod()
        chain.run_collector(timeout=60)
        say("5/8 the app emits events; its config changes; someone reads a Secret")
        chain.send_app_events(forward=200, http=50)
        chain.change_config_file()
        chain.read_secret()
        say("6/8 waiting for signed segments and checkpoints in the bucket")
        facts, _ = chain.wait_for_trail(timeout=30)
        chain.wait_for_cluster_event(
            lambda e: e["target"].get("resource") == "secrets" and e["action"] == "get",
            timeout=30,
        )
        narrate("cluster: the Secret read reached the operator's trail via the audit webhook")
        say("7/8 verifying the trail the way an auditor would")
        key = chain.public_key_file()
        shutil.copy(key, out / "orders.pub.pem")
        result = chain.verify(
            chain.pod_prefix, "--public-key", str(key), "--require-retention", "1"
        )
        print(result.stdout.rstrip())
        if result.returncode != 0:
            raise RuntimeError(f"verify failed:\n{result.stdout}{result.stderr}")
        narrate(f"verify {chain.pod_prefix} --require-retention 1: PASS")
        refused = chain.try_delete_locked(facts.segments[0])
        narrate(f"deleting a locked segment version: the server answers {refused}")
        tampered = chain.tampered_copy(facts.segments[0])
        bad = chain.verify(f"file://{tampered}", "--public-key", str(key))
        narrate(f"one byte changed in a copy: verify exits {bad.returncode} (FAIL, as it must)")
        say("8/8 stopping the collector cleanly (stream-closed checkpoint)")
        chain.stop_collector_gracefully()
        status = chain.wait_policy(lambda s: bool(s.get("lastCheckpoint")), timeout=30)
        narrate(f"policy status: lastCheckpoint {status.get('lastCheckpoint')}")
        chain.copy_trail(chain.pod_prefix, out / "trail")
        final = chain.verify(f"file://{out / 'trail'}", "--public-key", str(key))
        narrate(f"trail copied to {out / 'trail'}; verify there: exit {final.returncode}")
        if final.returncode != 0:
            raise RuntimeError(f"verify of the copied trail failed:\n{final.stdout}")
    return report


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
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"mode": mode, "seconds": elapsed}))
    say(f"done in {elapsed:.1f} s; report: {out / 'report.md'}; trail: {out / 'trail'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
