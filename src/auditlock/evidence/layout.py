"""What an evidence package holds, by member name (docs/review.md, "Evidence packages").

    manifest.json                  FORMAT, the period, the source, the sample's parameters,
                                   and the SHA-256 and size of every other member
    report.html                    the report of the period (auditlock report)
    verify.json                    the verification the package comes from (verify --json)
    ledger/keys/<key-id>.pub       the store's public keys ...
    ledger/keys/rotations/<old>-<new>.json   ... and rotation records, as stored
    ledger/keys/certs/<key-id>-<serial>.json   ... and certificate records, as stored
    ledger/streams/<stream>/<epoch>/ckpt-<index>.ckpt   the checkpoints covering the
                                   period and those the proofs are made against, as stored
    sample.jsonl                   the sampled events in sample order: rank, key, stream,
                                   epoch, seq, id, time, proof (its member name)
    sample/proofs/<rank>.json      one inclusion proof per sampled event (FORMAT.md 12)

`ledger/` is a partial ledger store with the names of FORMAT.md section 2.
"""

from __future__ import annotations

FORMAT = "auditlock/evidence/v1"
MANIFEST = "manifest.json"
REPORT = "report.html"
VERIFY = "verify.json"
SAMPLE = "sample.jsonl"
LEDGER = "ledger/"
REQUIRED = (REPORT, VERIFY, SAMPLE)


def proof_member(rank: int) -> str:
    return f"sample/proofs/{rank:06d}.json"
