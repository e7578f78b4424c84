"""Alert rules over the live trail: the AuditAlertRule model, its CRD and the engine
(docs/alerts.md)."""
