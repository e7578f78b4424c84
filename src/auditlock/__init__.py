"""auditlock: tamper-evident audit trails for Kubernetes, stored under WORM retention locks."""

__version__ = "0.1.0"
