"""Evidence packages: a period's report, verification, keys, checkpoints and a
reproducible sample of events with inclusion proofs, checked offline (docs/review.md,
"Evidence packages")."""
