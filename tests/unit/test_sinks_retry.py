"""Backoff with full jitter, and which errors are retried (unit tests of single functions)."""

from __future__ import annotations

import random

import botocore.exceptions
import google.api_core.exceptions as gexc
import pytest
import requests.exceptions

from auditlock.sinks import TransientError
from auditlock.sinks import gcs as gcs_sink
from auditlock.sinks import s3 as s3_sink
from auditlock.sinks.naming import validate_name
from auditlock.sinks.retry import RetryPolicy, call_with_retries


def test_delay_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for n, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [policy.delay(n, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not fixed
        assert min(delays) < ceiling * 0.2


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def run(fn: Flaky, policy: RetryPolicy, sleeps: list[float]) -> str:
    return call_with_retries(
        fn, is_transient=lambda e: isinstance(e, TimeoutError), policy=policy, what="op",
        sleep=sleeps.append,
    )  # fmt: skip


def test_transient_errors_are_retried_until_success() -> None:
    sleeps: list[float] = []
    fn = Flaky([TimeoutError(), TimeoutError()])
    assert run(fn, RetryPolicy(attempts=5), sleeps) == "ok"
    assert fn.calls == 3 and len(sleeps) == 2


def test_permanent_errors_are_not_retried() -> None:
    fn = Flaky([PermissionError("denied")])
    with pytest.raises(PermissionError):
        run(fn, RetryPolicy(attempts=5), [])
    assert fn.calls == 1


def test_attempts_run_out_into_a_transient_error_naming_the_operation() -> None:
    fn = Flaky([TimeoutError("slow")] * 10)
    with pytest.raises(TransientError, match=r"op failed 3 time\(s\).*slow"):
        run(fn, RetryPolicy(attempts=3, base_delay=0.001), [])
    assert fn.calls == 3


def test_deadline_stops_retries_early() -> None:
    now = [0.0]
    fn = Flaky([TimeoutError()] * 10)

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(TransientError):
        call_with_retries(
            fn, is_transient=lambda e: True, what="op", sleep=sleep, clock=lambda: now[0],
            policy=RetryPolicy(attempts=100, base_delay=1.0, max_delay=1.0, deadline=3.0),
        )  # fmt: skip
    assert now[0] <= 3.0 and fn.calls < 100


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("RequestTimeout", 400), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchBucket", 404), False),
        (_client_error("PreconditionFailed", 412), False),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), True),
        (botocore.exceptions.NoCredentialsError(), False),
    ],
)
def test_s3_transient_classification(exc: BaseException, transient: bool) -> None:
    assert s3_sink.is_transient(exc) is transient


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (gexc.TooManyRequests("slow down"), True),
        (gexc.ServiceUnavailable("busy"), True),
        (gexc.InternalServerError("oops"), True),
        (gexc.GatewayTimeout("late"), True),
        (gexc.Forbidden("no"), False),
        (gexc.NotFound("gone"), False),
        (gexc.PreconditionFailed("exists"), False),
        (gexc.MethodNotImplemented("never"), False),
        (requests.exceptions.ConnectionError("reset"), True),
        (requests.exceptions.ReadTimeout("slow"), True),
    ],
)
def test_gcs_transient_classification(exc: BaseException, transient: bool) -> None:
    assert gcs_sink.is_transient(exc) is transient


@pytest.mark.parametrize("good", ["a", "streams/s-1/segments/000001.jsonl", "keys/ab.pub"])
def test_valid_names(good: str) -> None:
    assert validate_name(good) == good


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "./a", "a/../b", "a\nb", "x" * 901])
def test_invalid_names(bad: str) -> None:
    from auditlock.sinks import DestinationError

    with pytest.raises(DestinationError):
        validate_name(bad)


def test_retry_option_from_a_config_file_mapping() -> None:
    from auditlock.sinks import DestinationError
    from auditlock.sinks.retry import retry_policy

    assert retry_policy(None) == RetryPolicy()
    fast = RetryPolicy(attempts=2, base_delay=0.1, max_delay=0.5, deadline=2.0)
    assert retry_policy(fast) is fast
    assert retry_policy({"attempts": 2, "max_delay": 0.5}) == RetryPolicy(attempts=2, max_delay=0.5)
    # The option as a collector's YAML gives it reaches the S3 sink as a policy.
    dest = s3_sink.S3Destination("s3://b/p", region="us-east-1", retry={"deadline": 3})
    assert dest.retry == RetryPolicy(deadline=3.0)
    for bad in ({"attempt": 2}, {"attempts": 0}, {"attempts": 1.5}, {"deadline": "x"},
                {"max_delay": True}, [1, 2]):  # fmt: skip
        with pytest.raises(DestinationError, match="retry"):
            retry_policy(bad)  # type: ignore[arg-type]
