"""retain-until = write time + period, never less, in the whole seconds stores keep."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from auditlock.sinks.base import LockMode, RetentionSpec


@given(
    written=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    days=st.integers(min_value=1, max_value=36500),
)
def test_retain_until_is_whole_seconds_and_never_short(written: datetime, days: int) -> None:
    spec = RetentionSpec(timedelta(days=days), LockMode.LOCKED)
    until = spec.retain_until(written)
    assert until.microsecond == 0
    assert written + timedelta(days=days) <= until < written + timedelta(days=days, seconds=1)
