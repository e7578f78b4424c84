"""s3://BUCKET/PREFIX - Amazon S3 (or a compatible server) with S3 Object Lock.

Every object is written with `x-amz-object-lock-mode` (COMPLIANCE for LockMode.LOCKED,
GOVERNANCE for LockMode.UNLOCKED), `x-amz-object-lock-retain-until-date` = write time +
retention period, an optional legal hold, and Content-MD5 so a truncated body is refused
by the server rather than stored.

Connection settings, most specific first:
  * options to `sinks.open(url, ...)`: endpoint_url, region, access_key_id,
    secret_access_key, session_token, profile, addressing_style ("path"/"virtual"),
    conditional_put, connect_timeout, read_timeout, retry (a RetryPolicy, or its fields by name);
  * URL query parameters: `s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=eu-west-1
    &addressing=path` (options win over the query);
  * the standard AWS environment and config files (AWS_ACCESS_KEY_ID, AWS_PROFILE,
    AWS_ENDPOINT_URL_S3, AWS_DEFAULT_REGION, ~/.aws/config, IRSA/instance roles, ...).

Never overwriting: puts carry `If-None-Match: *`, so the server refuses to create a second
version of an existing name (412) and we compare bytes instead. For servers that do not
support conditional writes, `conditional_put=False` falls back to head-then-put-then-verify;
between the head and the put another writer could slip in, in which case the verify step
sees someone else's bytes and raises ObjectConflict (in a versioned, locked bucket both
versions are kept, so nothing is lost - see docs/destinations.md).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.exceptions
from botocore.config import Config

from auditlock.sinks.base import (
    CheckReport,
    Destination,
    DestinationError,
    LockMode,
    ObjectConflict,
    ObjectNotFound,
    ObjectRetention,
    ObjectUnreadable,
    PutResult,
    RetentionSpec,
    same_bytes_or_conflict,
)
from auditlock.sinks.naming import join_prefix, parse_bucket_url, validate_name
from auditlock.sinks.retry import RetryPolicy, call_with_retries, retry_policy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_MODE = {LockMode.LOCKED: "COMPLIANCE", LockMode.UNLOCKED: "GOVERNANCE"}

FROM_S3_MODE = {v: k for k, v in S3_MODE.items()}


def _client_side_error(what: str, exc: botocore.exceptions.BotoCoreError) -> DestinationError:
    """A botocore failure that is not the server's answer (retries are over by now)."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return DestinationError(
            f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the pod an IAM role"
        )
    return DestinationError(f"{what}: {exc}")


_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
}
_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
_QUERY_KEYS = {"endpoint": "endpoint_url", "region": "region", "addressing": "addressing_style"}


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx, timeouts and dropped connections are worth another try."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _code(exc) in _TRANSIENT_CODES or _status(exc) >= 500 or _status(exc) == 429
    return isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ResponseStreamingError
        | botocore.exceptions.IncompleteReadError,
    )


class S3Destination(Destination):
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        addressing_style: str | None = None,
        conditional_put: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_pool_connections: int = 16,
    ) -> None:
        parsed = parse_bucket_url(url, "s3", _QUERY_KEYS)
        query = parsed.query
        self.url = url
        self.bucket = parsed.bucket
        self.prefix = parsed.prefix
        self.endpoint_url = endpoint_url or query.get("endpoint")
        self.region = region or query.get("region")
        self.addressing_style = addressing_style or query.get("addressing")
        self.conditional_put = conditional_put
        self.retry = retry_policy(retry)
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token
        self._profile = profile
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},  # we retry, see retry.py
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": self._addressing()},
            # Checksums only when the operation requires one: some S3-compatible servers
            # reject the newer CRC trailers; Content-MD5 below protects the bytes anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------

    def _addressing(self) -> Literal["auto", "virtual", "path"]:
        style = self.addressing_style or "auto"
        if style not in ("auto", "virtual", "path"):
            raise DestinationError(f"addressing style must be auto, virtual or path, not {style!r}")
        return style  # type: ignore[return-value]

    @property
    def client(self) -> S3Client:
        """Created on first use (no network until then); boto3 clients are thread-safe."""
        with self._lock:
            if self._client is None:
                session = boto3.session.Session(profile_name=self._profile)
                self._client = session.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    config=self._config,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    aws_session_token=self._session_token,
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _key(self, name: str) -> str:
        return join_prefix(self.prefix, validate_name(name))

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return call_with_retries(
                lambda: fn(**kwargs), is_transient=is_transient, policy=self.retry, what=what
            )
        except botocore.exceptions.ClientError as exc:
            raise self._permanent(what, exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _client_side_error(what, exc) from exc

    def _permanent(self, what: str, exc: botocore.exceptions.ClientError) -> DestinationError:
        code, status = _code(exc), _status(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in ("NoSuchKey", "404", "NotFound") and "bucket" not in message.lower():
            return ObjectNotFound(f"{what}: no such object in s3://{self.bucket}")
        if code == "NoSuchBucket":
            return DestinationError(
                f"{what}: bucket {self.bucket!r} does not exist"
                + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                + "; create it with Object Lock enabled"
            )
        if code in _CREDENTIAL_CODES or status == 403:
            return DestinationError(
                f"{what}: access denied by s3://{self.bucket} ({code or status}: {message}); "
                "check the access key, secret and the identity's permissions"
            )
        return DestinationError(f"{what}: S3 error {code or status}: {message}")

    # -- writing ---------------------------------------------------------------------

    def put(self, name: str, data: bytes, retention: RetentionSpec | None) -> PutResult:
        key = self._key(name)
        what = f"put s3://{self.bucket}/{key}"
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        asked: list[ObjectRetention | None] = [None]  # the lock of the attempt that landed

        def attempt() -> None:
            # Retain-until is computed per attempt, so a put that succeeds after retries
            # is still locked for the whole period after it was written.
            args: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": data,
                "ContentLength": len(data),
                "ContentMD5": md5,
                "ContentType": "application/octet-stream",
            }
            if self.conditional_put:
                args["IfNoneMatch"] = "*"
            if retention is not None:
                now = datetime.now(UTC)
                until = retention.retain_until(now)
                args["ObjectLockMode"] = S3_MODE[retention.mode]
                args["ObjectLockRetainUntilDate"] = until
                if retention.legal_hold:
                    args["ObjectLockLegalHoldStatus"] = "ON"
                asked[0] = ObjectRetention(retention.mode, until, retention.legal_hold, now)
            self.client.put_object(**args)

        if not self.conditional_put and self._exists(key):
            return self._already_there(name, key, data)
        try:
            call_with_retries(attempt, is_transient=is_transient, policy=self.retry, what=what)
        except botocore.exceptions.ClientError as exc:
            if self.conditional_put and (
                _status(exc) in (409, 412)
                or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")
            ):
                return self._already_there(name, key, data)
            raise self._put_error(what, exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _client_side_error(what, exc) from exc
        if not self.conditional_put and self.get(name) != data:
            # Check-then-put race (module docstring): someone else's bytes are now latest.
            raise ObjectConflict(
                f"{what}: another writer stored different bytes under this name at the same "
                "time; both versions are kept by the versioned bucket - investigate"
            )
        return PutResult(name=name, size=len(data), created=True, retention=asked[0])

    def _put_error(self, what: str, exc: botocore.exceptions.ClientError) -> DestinationError:
        code = _code(exc)
        if code in ("InvalidRequest", "InvalidArgument", "InvalidBucketState"):
            # Servers answer a lock header on a bucket without Object Lock (or a missing
            # bucket) with a bare 400; find out which, so the message says what to fix.
            diagnosis = self._diagnose_bucket()
            if diagnosis:
                return DestinationError(f"{what}: {diagnosis}")
        if code == "BadDigest":
            return DestinationError(f"{what}: the server received corrupted bytes (BadDigest)")
        return self._permanent(what, exc)

    def _diagnose_bucket(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                return f"bucket {self.bucket!r} does not exist; create it with Object Lock enabled"
            return None
        except botocore.exceptions.BotoCoreError:
            return None
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except botocore.exceptions.ClientError:
            enabled = None
        except botocore.exceptions.BotoCoreError:
            return None
        if enabled != "Enabled":
            return (
                f"bucket {self.bucket!r} refused the retention lock because Object Lock is "
                "not enabled on it; use a bucket created with Object Lock enabled"
            )
        return None

    def _already_there(self, name: str, key: str, data: bytes) -> PutResult:
        same_bytes_or_conflict(f"s3://{self.bucket}/{key}", self.get(name), data)
        return PutResult(name=name, size=len(data), created=False, retention=self.retention(name))

    def _exists(self, key: str) -> bool:
        try:
            self._call(f"head s3://{self.bucket}/{key}", self.client.head_object,
                       Bucket=self.bucket, Key=key)  # fmt: skip
        except ObjectNotFound:
            return False
        return True

    # -- reading ---------------------------------------------------------------------

    def get(self, name: str, max_bytes: int | None = None) -> bytes:
        key = self._key(name)
        what = f"get s3://{self.bucket}/{key}"

        def fetch() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                if max_bytes is None:
                    data: bytes = body.read()
                    return data
                if int(response.get("ContentLength") or 0) > max_bytes:
                    raise ObjectUnreadable(f"{what}: larger than {max_bytes} bytes (not read)")
                data = body.read(max_bytes + 1)  # the length header may lie: cap the read
                if len(data) > max_bytes:
                    raise ObjectUnreadable(f"{what}: larger than {max_bytes} bytes (not read)")
                return data
            finally:
                body.close()

        result: bytes = self._call(what, fetch)
        return result

    def list(self, prefix: str = "") -> Iterator[str]:
        root = self.prefix + "/" if self.prefix else ""
        full = root + prefix
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                args["ContinuationToken"] = token
            page = self._call(f"list s3://{self.bucket}/{full}", self.client.list_objects_v2,
                              **args)  # fmt: skip
            for item in page.get("Contents", []):
                yield item["Key"][len(root) :]
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def retention(self, name: str) -> ObjectRetention:
        key = self._key(name)
        head = self._call(f"head s3://{self.bucket}/{key}", self.client.head_object,
                          Bucket=self.bucket, Key=key)  # fmt: skip
        mode = head.get("ObjectLockMode")
        until = head.get("ObjectLockRetainUntilDate")
        if isinstance(until, datetime):
            until = until.astimezone(UTC)
        written = head.get("LastModified")
        return ObjectRetention(
            mode=FROM_S3_MODE.get(mode) if mode else None,
            retain_until=until,
            legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
            written_at=written.astimezone(UTC) if isinstance(written, datetime) else None,
        )

    # -- checking --------------------------------------------------------------------

    def check(self, required: RetentionSpec) -> CheckReport:
        from auditlock.sinks.s3_check import check_bucket

        return check_bucket(self, required)
