"""A real RFC 3161 time-stamping authority for tests: OpenSSL's `openssl ts -reply`
behind an HTTP endpoint on 127.0.0.1 (see docs/testing.md).

OpenSSL builds and signs every answer; this module only moves bytes over HTTP and makes
the TSA's keys (a root CA and a TSA certificate with the critical id-kp-timeStamping
extended key usage). For hostile-TSA tests, `mode` makes the server misbehave in ways a
real broken or malicious TSA could: answer garbage, answer too much, answer for other
bytes, or fail.

    with OpensslTsa(tmp_path) as tsa:
        tsa.url, tsa.root_pem
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.servers.kube_certs import self_signed_ca

Mode = Literal["honest", "garbage", "huge", "other-bytes", "http-error"]

_CONFIG = """\
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/root.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.57264.9.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed root that may sign certificates (ten years)."""
    return self_signed_ca(common_name, dt.timedelta(days=3650), path_length=0)


def make_tsa_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, common_name: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TSA signing certificate as RFC 3161 §2.3 requires it (critical timeStamping EKU)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class OpensslTsa:
    """OpenSSL's TSA answering `application/timestamp-query` POSTs on 127.0.0.1."""

    def __init__(self, workdir: Path, name: str = "auditlock test TSA") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_key, ca = make_ca(f"{name} root")
        tsa_key, tsa_certificate = make_tsa_certificate(ca_key, ca, name)
        self.root = ca
        self.root_pem = _pem(ca)
        (self.dir / "root.pem").write_bytes(self.root_pem)
        (self.dir / "tsa.pem").write_bytes(_pem(tsa_certificate))
        (self.dir / "tsa.key").write_bytes(
            tsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (self.dir / "serial").write_text("01\n")
        self.config = self.dir / "openssl.cnf"
        self.config.write_text(_CONFIG.format(dir=self.dir))
        self.mode: Mode = "honest"
        self.requests = 0
        self._lock = threading.Lock()  # openssl keeps the serial in one file
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def reply(self, query: bytes) -> bytes:
        """OpenSSL's TimeStampResp for a DER TimeStampReq."""
        with self._lock:
            (self.dir / "query.tsq").write_bytes(query)
            subprocess.run(
                [
                    "openssl", "ts", "-reply", "-config", str(self.config),
                    "-queryfile", str(self.dir / "query.tsq"),
                    "-out", str(self.dir / "reply.tsr"),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )  # fmt: skip
            return (self.dir / "reply.tsr").read_bytes()

    def query_for(self, data: bytes) -> bytes:
        """OpenSSL's own TimeStampReq over `data` (SHA-256, with the certificate asked)."""
        with self._lock:
            (self.dir / "other.bin").write_bytes(data)
            done = subprocess.run(
                [
                    *("openssl", "ts", "-query", "-sha256", "-cert"),
                    "-data",
                    str(self.dir / "other.bin"),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            return done.stdout

    def start(self) -> OpensslTsa:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                tsa.requests += 1
                length = int(self.headers.get("Content-Length", "0"))
                query = self.rfile.read(min(length, 1 << 20))
                if tsa.mode == "http-error":
                    self.send_error(500, "TSA unavailable")
                    return
                if tsa.mode == "other-bytes":
                    query = tsa.query_for(b"bytes nobody asked to timestamp")
                body = {
                    "garbage": b"\x30\x03\x02\x01",
                    "huge": b"\x00" * (8 << 20),
                }.get(tsa.mode) or tsa.reply(query)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OpensslTsa:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def openssl_tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpensslTsa]:
    """One real TSA per session; tests that change `mode` put it back to "honest"."""
    with OpensslTsa(tmp_path_factory.mktemp("tsa")) as tsa:
        yield tsa
