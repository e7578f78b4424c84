"""A real collector stores events in the one form FORMAT.md defines, and verify's line
rules accept everything it stores (docs/FORMAT.md sections 3 and 5).

IP addresses arrive in any valid text and are stored in RFC 5952 form, the IPv4-mapped
form included, whatever Python prints; a zoned address is refused with the field named.
The collector refuses an id its sender repeats within its window of recent ids; after a
restart (an empty window) the repeat is stored, and verify passes with a `duplicate-id`
warning naming it.
"""

from __future__ import annotations

from pathlib import Path

from auditlock.ledger.keys import load_public_key
from auditlock.ledger.verify import VerifyOptions, verify
from tests.helpers.http_intake import event, post, wait_until_shipped
from tests.servers.sidecar import ledger_events, make_config, open_store, sidecar_process

FORMS = {
    "::FFFF:102:304": "::ffff:1.2.3.4",
    "0:0:0:0:0:ffff:10.0.0.1": "::ffff:10.0.0.1",
    "2001:DB8:0:0:1:0:0:1": "2001:db8::1:0:0:1",
    "10.0.0.9": "10.0.0.9",
}


def test_collector_stores_canonical_ips_and_verify_accepts_every_line(tmp_path: Path) -> None:
    config = make_config(tmp_path, ports=True)
    with sidecar_process(tmp_path, config) as sidecar:
        sidecar.start()
        for n, given in enumerate(FORMS):
            raw = event(n, id=f"ip-{n}")
            raw["actor"] = {"kind": "user", "name": "bob", "ip": given}
            assert post(sidecar.http_port, raw, None) == (202, {"accepted": 1, "filtered": 0})
        zoned = event(9, id="zoned")
        zoned["actor"] = {"kind": "user", "name": "bob", "ip": "fe80::1%eth0"}
        status, answer = post(sidecar.http_port, zoned, None)
        assert status == 400 and "actor.ip" in answer["error"], answer
        status, answer = post(sidecar.http_port, event(7, id="ip-0"), None)
        assert status == 400, answer  # the collector's window of recent sender ids
        wait_until_shipped(sidecar, len(FORMS))
        assert sidecar.terminate() == 0
        sidecar.start()  # a new process: an empty window, the same stream
        assert post(sidecar.http_port, event(7, id="ip-0"), None)[0] == 202
        wait_until_shipped(sidecar, len(FORMS) + 1)
        assert sidecar.terminate() == 0
    store = open_store(config["destination"]["url"])
    stored = [e["event"] for e in ledger_events(store)]
    assert [e["actor"]["ip"] for e in stored[: len(FORMS)]] == list(FORMS.values())
    assert "zoned" not in [e["id"] for e in stored]
    report = verify(store, VerifyOptions(public_keys=[load_public_key(tmp_path / "key.pub.pem")]))
    assert report.ok, report.summary()
    assert report.events_verified == len(FORMS) + 1
    repeats = [w for w in report.warnings if w.code == "duplicate-id"]
    assert ["'ip-0'" in w.message for w in repeats] == [True]
