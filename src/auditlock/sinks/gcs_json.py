"""The Cloud Storage JSON API calls the gs:// sink makes, without google-cloud-storage.

Why: importing `google.cloud.storage` also imports google-api-core, protobuf and the
googleapis status protos, resident for the life of a sidecar whose budget is 48 MiB
(their cost: docs/benchmarks.md, "Import costs").
The sink needs six calls, so it makes them with the pieces google-cloud-storage itself
is built on, all official Google libraries:

* google-auth's `AuthorizedSession` (credentials, token refresh on 401, the HTTP session);
* google-resumable-media's `MultipartUpload` / `Download` (the upload and download
  protocol, MD5 checks);
* the JSON API's URLs and fields (https://cloud.google.com/storage/docs/json_api), the
  same ones the client library sends.

`google.cloud.storage` is still what `GCSDestination.client` returns (for `check` and
for callers that want the full client); it is imported only when that is used.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from auditlock.sinks.base import ObjectUnreadable

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
# The scopes google.cloud.storage.Client asks for.
SCOPES = (
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
)


class GCSHTTPError(Exception):
    """A non-2xx answer of the JSON API: its status code and the API's own message."""

    def __init__(self, code: int, message: str, method: str = "", url: str = "") -> None:
        super().__init__(f"{code} {method} {url}: {message}".replace("  ", " "))
        self.code = code
        self.message = message


def error_from_response(response: Any) -> GCSHTTPError:
    """The JSON error body's `error.message` (else the raw text) with the status code."""
    text = response.text
    message = text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            message = error["message"]
    request = getattr(response, "request", None)
    return GCSHTTPError(
        response.status_code,
        message,
        getattr(request, "method", "") or "",
        getattr(request, "url", "") or "",
    )


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 as the API writes it ("2031-03-11T09:30:00.123456789Z"), to microseconds."""
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value)  # 3.11+: accepts "Z" and truncates nanoseconds
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """The form google-cloud-storage sends (`_datetime_to_rfc3339`)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _no_retries() -> Any:
    """google-resumable-media retries on its own by default; the client library turns
    that off when told `retry=None`, as the sink does (it retries in retry.py)."""
    from google.resumable_media import RetryStrategy

    return RetryStrategy(max_retries=0)  # type: ignore[no-untyped-call]


class JsonApi:
    """One HTTP session to the JSON API (not shared across threads)."""

    def __init__(self, credentials: Any, endpoint: str | None, timeout: float) -> None:
        from google.auth.transport.requests import AuthorizedSession

        # google-auth and google-resumable-media are untyped: Any at this boundary.
        self.session: Any = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        self.base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    # -- URLs (the same the client library builds) ------------------------------------

    def _bucket_url(self, bucket: str) -> str:
        return f"{self.base}/storage/v1/b/{quote(bucket, safe='')}"

    def _object_url(self, bucket: str, key: str) -> str:
        return f"{self._bucket_url(bucket)}/o/{quote(key, safe='')}"

    # -- calls -----------------------------------------------------------------------

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if not 200 <= response.status_code < 300:
            raise error_from_response(response)
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def upload(
        self, bucket: str, key: str, data: bytes, metadata: dict[str, Any], content_type: str
    ) -> dict[str, Any]:
        """Create-only multipart upload (`ifGenerationMatch=0`) with an MD5 of the bytes."""
        from google.resumable_media import InvalidResponse
        from google.resumable_media.requests import MultipartUpload

        url = (
            f"{self.base}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
            "?uploadType=multipart&ifGenerationMatch=0"
        )
        upload: Any = MultipartUpload(url, checksum="md5")  # type: ignore[no-untyped-call]
        upload._retry_strategy = _no_retries()  # ours, in retry.py
        try:
            response = upload.transmit(
                self.session, data, {"name": key, **metadata}, content_type, timeout=self.timeout
            )
        except InvalidResponse as exc:
            raise error_from_response(exc.response) from exc
        body: dict[str, Any] = response.json()
        return body

    def download(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes, checked against the MD5 the server reports. With max_bytes,
        ObjectUnreadable as soon as more arrive (counted after any content decoding)."""
        from google.resumable_media import InvalidResponse
        from google.resumable_media.requests import Download

        url = (
            f"{self.base}/download/storage/v1/b/{quote(bucket, safe='')}/o/"
            f"{quote(key, safe='')}?alt=media"
        )
        out = (
            io.BytesIO() if max_bytes is None else _CappedBuffer(max_bytes, f"gs://{bucket}/{key}")
        )
        download: Any = Download(  # type: ignore[no-untyped-call]
            url, stream=out, headers={"accept-encoding": "gzip"}, checksum="md5"
        )
        download._retry_strategy = _no_retries()
        try:
            download.consume(self.session, timeout=self.timeout)
        except InvalidResponse as exc:
            raise error_from_response(exc.response) from exc
        return out.getvalue()

    def get_object(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None on 404 (as the client library's `get_blob`)."""
        try:
            return self._json("GET", self._object_url(bucket, key), params={"projection": "noAcl"})
        except GCSHTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def patch_object(self, bucket: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._json(
            "PATCH", self._object_url(bucket, key), params={"projection": "full"}, json=fields
        )

    def get_bucket(self, bucket: str) -> dict[str, Any]:
        return self._json("GET", self._bucket_url(bucket), params={"projection": "noAcl"})

    def list_page(
        self, bucket: str, prefix: str, page_token: str | None, max_results: int
    ) -> tuple[list[str], str | None]:
        params: dict[str, Any] = {
            "projection": "noAcl",
            "prefix": prefix,
            "maxResults": max_results,
            "fields": "items(name),nextPageToken",
        }
        if page_token:
            params["pageToken"] = page_token
        body = self._json("GET", f"{self._bucket_url(bucket)}/o", params=params)
        names = [str(item["name"]) for item in body.get("items", [])]
        token = body.get("nextPageToken")
        return names, str(token) if token else None


class _CappedBuffer(io.BytesIO):
    """A download target that refuses to grow past a cap (a hostile store's huge object)."""

    def __init__(self, cap: int, what: str) -> None:
        super().__init__()
        self.cap = cap
        self.what = what

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.cap:
            raise ObjectUnreadable(f"{self.what}: larger than {self.cap} bytes (not read)")
        return super().write(data)
