"""Names, labels and annotations the operator puts on the objects it touches.

One place for them: the webhooks, the reconciler, the chart and the docs must agree.
"""

from __future__ import annotations

import hashlib

PREFIX = "auditlock.io"

# On injected pods.
ANNOTATION_POLICY = f"{PREFIX}/policy"  # name of the AuditPolicy that injected the pod
ANNOTATION_CONFIG_HASH = f"{PREFIX}/config-hash"  # hash of the collector config injected
ANNOTATION_INJECT = f"{PREFIX}/inject"  # "false" opts a pod out (unless enforcement: required)
LABEL_POLICY = f"{PREFIX}/policy"  # lets the operator list a policy's pods cheaply

# On namespaces with at least one `enforcement: required` policy. The validating
# (fail-closed) webhook selects only these namespaces, so an operator outage blocks pod
# creation where a policy demands it and nowhere else.
LABEL_ENFORCED_NAMESPACE = f"{PREFIX}/enforcement"
ENFORCED = "required"

# Key rotation: set (or change) this annotation on an AuditPolicy to any new value; the
# operator makes a new key, stores a rotation record signed by the old key beside the
# data, and records the value it acted on in the key Secret's annotation.
ANNOTATION_ROTATE_KEY = f"{PREFIX}/rotate-key"
ANNOTATION_ROTATED_FOR = f"{PREFIX}/rotated-for"

# On objects the operator creates for a policy.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "auditlock-operator"
LABEL_OWNER_POLICY = f"{PREFIX}/owner-policy"

COLLECTOR_CONTAINER = "auditlock-collector"
VOLUME_KEY = "auditlock-key"
# signing: perPod: the pod's projected ServiceAccount token for the certificate endpoint.
VOLUME_CERTIFICATE_TOKEN = "auditlock-certificate-token"
VOLUME_CONFIG = "auditlock-config"
VOLUME_SPOOL = "auditlock-spool"
VOLUME_TMP = "auditlock-tmp"
VOLUME_GCS_CREDENTIALS = "auditlock-gcs-credentials"

KEY_MOUNT = "/var/run/auditlock/key"
CERTIFICATE_TOKEN_MOUNT = "/var/run/auditlock/certificate-token"
# A projected token lives at most this long; the kubelet refreshes it well before.
CERTIFICATE_TOKEN_SECONDS = 600
# The audience of that token: a token for the API server is refused by the certificate
# endpoint, and this one is useless to the API server.
CERTIFICATE_AUDIENCE = "auditlock-certificates"
KEY_FILE = "ed25519.pem"  # PKCS#8 PEM private key inside the Secret
PUBLIC_KEY_FILE = "ed25519.pub.pem"  # SubjectPublicKeyInfo PEM, also in the Secret
CONFIG_MOUNT = "/etc/auditlock"
CONFIG_FILE = "sidecar.yaml"
ALERT_RULES_FILE = "alerts.json"  # the namespace's alert rules, beside the config
SPOOL_MOUNT = "/var/lib/auditlock/spool"
TMP_MOUNT = "/tmp"  # an emptyDir: the root filesystem is read-only
GCS_CREDENTIALS_MOUNT = "/var/run/auditlock/gcs"
HEALTH_PORT = 9880


def _bounded(prefix: str, policy: str) -> str:
    # Object names are at most 253 characters, ConfigMap/Secret names DNS subdomains; a
    # long policy name is shortened with a hash so two policies never collide.
    name = f"{prefix}-{policy}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(policy.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


def key_secret_name(policy: str) -> str:
    return _bounded("auditlock-key", policy)


def config_map_name(policy: str) -> str:
    return _bounded("auditlock-config", policy)
