"""gs://BUCKET/PREFIX - Google Cloud Storage with Object Retention Lock.

Retention rule: every object is uploaded with per-object retention in its metadata -
`retention.mode` = `Locked` (LockMode.LOCKED) or `Unlocked` (LockMode.UNLOCKED) and
`retention.retainUntilTime` = the writer's clock at upload time + the retention period,
rounded up to the next whole second. The bucket must have Object Retention enabled.
A bucket retention policy, if the bucket also has one, applies on top: GCS keeps an
object until both have expired, and `retention()` reports the later of the two.
`legal_hold` maps to a temporary hold.

Connection settings, most specific first:
  * options to `sinks.open(url, ...)`: endpoint (an emulator or private endpoint),
    project, credentials (a google.auth Credentials object), credentials_file (path to
    a service-account JSON key), credentials_info (that JSON, parsed), anonymous
    (emulators only), timeout, retry (a RetryPolicy, or its fields by name);
  * URL query: `gs://bucket/prefix?endpoint=http://127.0.0.1:4443&project=p`;
  * the environment: STORAGE_EMULATOR_HOST (then credentials default to anonymous),
    GOOGLE_APPLICATION_CREDENTIALS, workload identity / metadata server (Application
    Default Credentials).

Never overwriting: uploads carry `ifGenerationMatch=0` (create only). A 412 means the
name exists; we read it and compare bytes (same = idempotent success, else ObjectConflict).
Uploads send an MD5 of the bytes, so a truncated upload is refused by the server.
Retries: 429, 5xx, timeouts and dropped connections, with backoff and jitter (retry.py);
403, 404 and 412 are never retried.

Client: the sink's calls (upload, download, list, object and bucket metadata, hold) go
through gcs_json.py - google-auth's AuthorizedSession and google-resumable-media, the
pieces google-cloud-storage is built on, with the same URLs and fields - so a sidecar
never imports google-cloud-storage, google-api-core or protobuf. `GCSDestination.client`
is a google.cloud.storage.Client with the same settings (used by `check`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import google.auth.exceptions
import google.cloud  # a namespace package: executes nothing (see the check below)
import requests.exceptions

from auditlock.sinks.base import (
    CheckReport,
    Destination,
    DestinationError,
    LockMode,
    ObjectNotFound,
    ObjectRetention,
    PutResult,
    RetentionSpec,
    same_bytes_or_conflict,
)
from auditlock.sinks.gcs_json import SCOPES, GCSHTTPError, JsonApi, format_time, parse_time
from auditlock.sinks.naming import join_prefix, parse_bucket_url, validate_name
from auditlock.sinks.retry import RetryPolicy, call_with_retries, retry_policy

if TYPE_CHECKING:
    import google.api_core.exceptions as gexc
    from google.cloud import storage

# The sink's own calls go through gcs_json (google-auth + google-resumable-media), so a
# sidecar never imports google-cloud-storage, google-api-core or protobuf
# (docs/benchmarks.md, "Import costs"). `GCSDestination.client`
# (google.cloud.storage.Client) serves `check` and callers that want the whole client
# library; errors from it are handled alike.
_API_CORE = "google.api_core.exceptions"

# google-cloud-storage is the `gcs` extra (`client`, `check`): without it this module
# does not load, so sinks.open names the extra to install. (find_spec
# alone would answer from sys.modules, hence `import google.cloud` above.)
if importlib.util.find_spec("google.cloud.storage") is None:
    raise ModuleNotFoundError("No module named 'google.cloud.storage'", name="google.cloud.storage")

_QUERY_KEYS = {"endpoint", "project"}
GCS_MODE = {LockMode.LOCKED: "Locked", LockMode.UNLOCKED: "Unlocked"}
FROM_GCS_MODE = {v: k for k, v in GCS_MODE.items()}


def server_message(exc: gexc.GoogleAPICallError) -> str:
    """The API's own one-line reason; upload errors otherwise carry the whole JSON body."""
    text = str(getattr(exc, "message", "") or exc)
    found = re.search(r'"message":\s*"((?:[^"\\]|\\.)*)"', text)
    return found.group(1) if found else text


def is_transient(exc: BaseException) -> bool:
    """Throttling (429), server errors (5xx but 501), timeouts and dropped connections."""
    if isinstance(exc, GCSHTTPError):
        return exc.code == 429 or (500 <= exc.code < 600 and exc.code != 501)
    api_core = sys.modules.get(_API_CORE)  # only the full client raises these
    if api_core is not None and isinstance(exc, api_core.TooManyRequests | api_core.ServerError):
        return not isinstance(exc, api_core.MethodNotImplemented)
    return isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError
        | google.auth.exceptions.TransportError
        | ConnectionError
        | TimeoutError,
    )


def http_status(exc: BaseException) -> tuple[int, str] | None:
    """(status code, the API's message) of an HTTP error answer, from either client."""
    if isinstance(exc, GCSHTTPError):
        return exc.code, exc.message
    api_core = sys.modules.get(_API_CORE)
    if api_core is not None and isinstance(exc, api_core.GoogleAPICallError):
        return int(exc.code or 0), server_message(exc)
    return None


class GCSDestination(Destination):
    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        project: str | None = None,
        credentials: Any = None,
        credentials_file: str | None = None,
        credentials_info: dict[str, Any] | None = None,
        anonymous: bool | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
    ) -> None:
        parsed = parse_bucket_url(url, "gs", _QUERY_KEYS)
        query = parsed.query
        self.url = url
        self.bucket_name = parsed.bucket
        self.prefix = parsed.prefix
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        self.endpoint = endpoint or query.get("endpoint") or emulator
        self.project = project or query.get("project")
        self.anonymous = anonymous if anonymous is not None else (
            credentials is None
            and credentials_file is None
            and credentials_info is None
            and bool(self.endpoint)
        )  # fmt: skip
        self._credentials = credentials
        self._credentials_file = credentials_file
        self._credentials_info = credentials_info
        self.timeout = timeout
        self.retry = retry_policy(retry)
        # One session (and client) per thread: neither is documented thread-safe.
        self._local = threading.local()
        self._apis: list[JsonApi] = []
        self._clients: list[storage.Client] = []
        self._clients_lock = threading.Lock()
        self._bucket_meta: dict[str, Any] | None = None

    # -- plumbing --------------------------------------------------------------------

    @property
    def api(self) -> JsonApi:
        """This thread's JSON API session: what put/get/list/retention use."""
        api: JsonApi | None = getattr(self._local, "api", None)
        if api is None:
            api = JsonApi(self._new_credentials(), self.endpoint, self.timeout)
            self._local.api = api
            with self._clients_lock:
                self._apis.append(api)
        return api

    @property
    def client(self) -> storage.Client:
        """This thread's google.cloud.storage.Client (imports the library on first use)."""
        client: storage.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every thread's sessions and clients."""
        with self._clients_lock:
            apis, self._apis = self._apis, []
            clients, self._clients = self._clients, []
        for api in apis:
            api.close()
        for client in clients:
            client.close()
        self._local = threading.local()

    def _new_credentials(self) -> Any:
        """The credentials google.cloud.storage.Client would use, same precedence."""
        import google.auth
        import google.auth.credentials

        try:
            if self._credentials_file:
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    self._credentials_file, scopes=SCOPES
                )
            if self.anonymous:
                return google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
            if self._credentials_info is not None:
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    self._credentials_info, scopes=SCOPES
                )
            if self._credentials is not None:
                return google.auth.credentials.with_scopes_if_required(  # type: ignore[no-untyped-call]
                    self._credentials, SCOPES
                )
            credentials, _project = google.auth.default(scopes=SCOPES)
            return credentials
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise self._no_credentials(exc) from exc
        except (OSError, ValueError) as exc:
            raise DestinationError(f"gs://{self.bucket_name}: cannot create client: {exc}") from exc

    def _no_credentials(self, exc: Exception) -> DestinationError:
        return DestinationError(
            f"gs://{self.bucket_name}: no Google credentials found ({exc}); set "
            "GOOGLE_APPLICATION_CREDENTIALS or use workload identity"
        )

    def _new_client(self) -> storage.Client:
        from google.cloud import storage

        options = {"api_endpoint": self.endpoint} if self.endpoint else None
        try:
            if self._credentials_file:
                return storage.Client.from_service_account_json(
                    self._credentials_file, project=self.project, client_options=options
                )
            credentials = self._credentials
            if self._credentials_info is not None:
                from google.oauth2 import service_account

                credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    self._credentials_info
                )
            if self.anonymous:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            return storage.Client(
                project=self.project or ("auditlock" if self.anonymous else None),
                credentials=credentials,
                client_options=options,
            )
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise self._no_credentials(exc) from exc
        except (OSError, ValueError) as exc:
            raise DestinationError(f"gs://{self.bucket_name}: cannot create client: {exc}") from exc

    @property
    def bucket(self) -> storage.Bucket:
        return self.client.bucket(self.bucket_name)

    def _key(self, name: str) -> str:
        return join_prefix(self.prefix, validate_name(name))

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return call_with_retries(fn, is_transient=is_transient, policy=self.retry, what=what)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise self._auth_error(what, exc) from exc
        except Exception as exc:
            if http_status(exc) is None:
                raise
            raise self._permanent(what, exc) from exc

    def _auth_error(self, what: str, exc: Exception) -> DestinationError:
        return DestinationError(
            f"{what}: the credentials were rejected or could not be refreshed ({exc}); check "
            "GOOGLE_APPLICATION_CREDENTIALS / workload identity for this pod"
        )

    def _permanent(self, what: str, exc: BaseException) -> DestinationError:
        code, message = http_status(exc) or (0, str(exc))
        if code == 404:
            if "bucket" in str(message).lower():
                return DestinationError(f"{what}: bucket {self.bucket_name!r} does not exist")
            return ObjectNotFound(f"{what}: no such object in gs://{self.bucket_name}")
        if code in (401, 403):
            return DestinationError(
                f"{what}: access denied by gs://{self.bucket_name} ({code}: {message}); "
                "check the credentials and the identity's storage.objects.* permissions"
            )
        if code == 412:
            return DestinationError(f"{what}: precondition failed (412): {message}")
        return DestinationError(f"{what}: GCS error {code}: {message}")

    # -- writing ---------------------------------------------------------------------

    def put(self, name: str, data: bytes, retention: RetentionSpec | None) -> PutResult:
        key = self._key(name)
        what = f"put gs://{self.bucket_name}/{key}"
        asked: list[ObjectRetention | None] = [None]  # the lock of the attempt that landed

        def upload() -> None:
            metadata: dict[str, Any] = {}
            if retention is not None:
                # Per attempt, so a retried upload is locked for the whole period.
                now = datetime.now(UTC)
                until = retention.retain_until(now)
                metadata["retention"] = {
                    "mode": GCS_MODE[retention.mode],
                    "retainUntilTime": format_time(until),
                }
                asked[0] = ObjectRetention(retention.mode, until, retention.legal_hold, now)
            self.api.upload(self.bucket_name, key, data, metadata, "application/octet-stream")

        try:
            call_with_retries(upload, is_transient=is_transient, policy=self.retry, what=what)
        except GCSHTTPError as exc:
            if exc.code == 412:  # the name exists (create-only upload)
                return self._already_there(name, key, data, retention)
            if exc.code == 404:
                # An upload cannot miss an object; only the bucket can be missing.
                raise DestinationError(
                    f"{what}: bucket {self.bucket_name!r} does not exist"
                ) from exc
            if exc.code == 400 and retention is not None:
                diagnosis = self._diagnose_bucket()
                if diagnosis:
                    raise DestinationError(f"{what}: {diagnosis}") from exc
            raise self._permanent(what, exc) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise self._auth_error(what, exc) from exc
        if retention is not None and retention.legal_hold:
            self._hold(key)
        return PutResult(name=name, size=len(data), created=True, retention=asked[0])

    def _hold(self, key: str) -> None:
        """Set a temporary hold (our legal hold). The JSON API ignores `temporaryHold` in
        an upload's metadata, so it is a patch after the upload; a retried put re-applies
        it if the process died in between."""
        self._call(
            f"set hold on gs://{self.bucket_name}/{key}",
            lambda: self.api.patch_object(self.bucket_name, key, {"temporaryHold": True}),
        )

    def _already_there(
        self, name: str, key: str, data: bytes, retention: RetentionSpec | None
    ) -> PutResult:
        same_bytes_or_conflict(f"gs://{self.bucket_name}/{key}", self.get(name), data)
        stored = self.retention(name)
        if retention is not None and retention.legal_hold and not stored.legal_hold:
            self._hold(key)
            stored = self.retention(name)
        return PutResult(name=name, size=len(data), created=False, retention=stored)

    def _diagnose_bucket(self) -> str | None:
        try:
            bucket = self.api.get_bucket(self.bucket_name)
        except GCSHTTPError as exc:
            if exc.code == 404:
                return f"bucket {self.bucket_name!r} does not exist"
            return None
        except Exception:
            return None
        if (bucket.get("objectRetention") or {}).get("mode") != "Enabled":
            return (
                f"bucket {self.bucket_name!r} refused per-object retention because Object "
                "Retention is not enabled on it; create the bucket with "
                "--enable-per-object-retention"
            )
        return None

    # -- reading ---------------------------------------------------------------------

    def get(self, name: str, max_bytes: int | None = None) -> bytes:
        key = self._key(name)
        data: bytes = self._call(
            f"get gs://{self.bucket_name}/{key}",
            lambda: self.api.download(self.bucket_name, key, max_bytes),
        )
        return data

    def list(self, prefix: str = "") -> Iterator[str]:
        root = self.prefix + "/" if self.prefix else ""
        what = f"list gs://{self.bucket_name}/{root}{prefix}"
        token: str | None = None
        while True:

            def page(token: str | None = token) -> tuple[list[str], str | None]:
                return self.api.list_page(self.bucket_name, root + prefix, token, 1000)

            names, token = self._call(what, page)
            for n in names:
                yield n[len(root) :]
            if not token:
                return

    def retention(self, name: str) -> ObjectRetention:
        key = self._key(name)
        what = f"read retention of gs://{self.bucket_name}/{key}"
        blob: dict[str, Any] | None = self._call(
            what, lambda: self.api.get_object(self.bucket_name, key)
        )
        if blob is None:
            raise ObjectNotFound(f"{what}: no such object")
        hold = bool(blob.get("temporaryHold") or blob.get("eventBasedHold"))
        # Two locks may hold the object: its own retention and the bucket's retention
        # policy (`retentionExpirationTime`). Report the strongest: the latest Locked one,
        # else the latest of any.
        locks: list[tuple[LockMode, datetime]] = []
        own = blob.get("retention") or {}
        own_mode = FROM_GCS_MODE.get(own.get("mode") or "")
        own_until = parse_time(own.get("retainUntilTime"))
        if own_mode is not None and own_until is not None:
            locks.append((own_mode, own_until.astimezone(UTC)))
        bucket_until = parse_time(blob.get("retentionExpirationTime"))
        own_is_stronger = bool(
            locks
            and locks[0][0] is LockMode.LOCKED
            and bucket_until
            and locks[0][1] >= bucket_until
        )
        if bucket_until is not None and not own_is_stronger:  # else skip reading the bucket
            policy_mode = LockMode.LOCKED if self._bucket_policy_locked() else LockMode.UNLOCKED
            locks.append((policy_mode, bucket_until.astimezone(UTC)))
        locked = [lock for lock in locks if lock[0] is LockMode.LOCKED]
        best = max(locked or locks, key=lambda lock: lock[1], default=None)
        mode, until = best if best is not None else (own_mode, own_until)
        created = parse_time(blob.get("timeCreated"))
        return ObjectRetention(
            mode=mode,
            retain_until=until,
            legal_hold=hold,
            written_at=created.astimezone(UTC) if created is not None else None,
        )

    def _bucket_policy_locked(self) -> bool:
        if self._bucket_meta is None:
            self._bucket_meta = self._call(
                f"read bucket gs://{self.bucket_name}",
                lambda: self.api.get_bucket(self.bucket_name),
            )
        return bool((self._bucket_meta.get("retentionPolicy") or {}).get("isLocked"))

    # -- checking --------------------------------------------------------------------

    def check(self, required: RetentionSpec) -> CheckReport:
        from auditlock.sinks.gcs_check import check_bucket

        return check_bucket(self, required)
