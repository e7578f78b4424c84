"""The collector's per-pod signing key (docs/operator.md, "Per-pod keys"; FORMAT.md
section 9, "Certificates").

The key is generated when the collector starts and lives only in this process's memory:
never written to a file, never sent anywhere but its public half. Before the first
checkpoint the collector asks the operator to certify it, proving which pod it runs in
with the pod's projected ServiceAccount token; until the operator says yes, shipping
waits and intake keeps spooling (nothing acknowledged is lost). A restart makes a new
key and a new certificate. The certificate is renewed at two thirds of its validity.

Requests are blocking (urllib); shipping runs them on its own I/O threads.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from auditlock.ledger.keys import Signer, generate, raw_public
from auditlock.sinks.base import TransientError

log = logging.getLogger("auditlock.sidecar.pod_key")

TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 * 1024


class CertificateRefused(TransientError):
    """The operator did not certify the key (yet): shipping retries with backoff."""


@dataclass
class PodKey:
    url: str
    stream: str
    token_file: str
    ca_file: str = ""
    ca_pem: str = ""
    signer: Signer = field(default_factory=lambda: Signer(generate()), repr=False)
    certified_at_ns: int = 0  # this collector's clock when the newest certificate came
    not_after_ns: int = 0  # 0: not certified yet
    certificate: str = ""  # the object name of the newest certificate

    @property
    def certified(self) -> bool:
        return self.not_after_ns > 0

    def renew_at_ns(self) -> int:
        """When to ask for the next certificate: two thirds of the way from receiving this
        one to its `not_after` (its `not_before` is set back for clock skew, so it says
        nothing about when it was issued)."""
        return self.certified_at_ns + (self.not_after_ns - self.certified_at_ns) * 2 // 3

    def certify(self) -> None:
        """Ask the operator to certify the key; CertificateRefused saying why not."""
        from auditlock.ledger.certificate import decode_certificate
        from auditlock.ledger.errors import FormatError

        try:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise CertificateRefused(
                f"cannot read the pod's token {self.token_file}: {exc}"
            ) from None
        public = base64.b64encode(raw_public(self.signer.public)).decode()
        body = json.dumps({"public_key": public, "stream": self.stream}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        context = ssl.create_default_context(
            cafile=self.ca_file or None, cadata=self.ca_pem or None
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as ans:
                answer = json.loads(ans.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as err:
            raise CertificateRefused(
                f"operator refused the certificate ({err.code}): {_error(err)}"
            ) from None
        except (OSError, ValueError) as exc:
            raise CertificateRefused(f"operator not reachable at {self.url}: {exc}") from None
        try:
            cert = decode_certificate(str(answer["certificate"]).encode())
        except (KeyError, TypeError, FormatError) as exc:
            raise CertificateRefused(f"operator answered no usable certificate: {exc}") from None
        if cert.key_id != self.signer.key_id or cert.subject.stream != self.stream:
            raise CertificateRefused("operator certified another key or stream")
        self.certified_at_ns, self.not_after_ns = time.time_ns(), cert.not_after_ns
        self.certificate = str(answer.get("name", ""))
        log.info(
            "key %s certified for stream %s until %s (%s)",
            self.signer.key_id[:16],
            self.stream,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cert.not_after_ns // 10**9)),
            self.certificate,
        )


def _error(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read(4096)).get("error", ""))[:300]
    except (OSError, ValueError, AttributeError):
        return err.reason if isinstance(err.reason, str) else ""
