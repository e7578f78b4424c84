"""RFC 3339 timestamps in the one form the ledger stores: UTC, nine fraction digits, `Z`.

    2026-11-29T15:08:52.123456789Z

Input may use fewer fraction digits (or none), a lowercase `t`/`z`, or a numeric offset;
it is converted to that form. Leap seconds (`:60`) are refused: they cannot be ordered
unambiguously against the following second.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})\Z"
)
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=64)
def _valid_date(text: str) -> bool:
    """YYYY-MM-DD is a real calendar date (cached: events of a day share it)."""
    try:
        datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def normalize_time(text: str) -> str:
    """The canonical form of an RFC 3339 timestamp; ValueError with the reason if invalid."""
    if not text.isascii():
        raise ValueError("not an RFC 3339 time like 2026-11-29T15:08:52.123456789Z")
    if (  # fast path: already canonical, the common case on the hot path
        len(text) == 30
        and _CANONICAL.match(text)
        and _valid_date(text[:10])
        and text[11:13] <= "23"
        and text[14:16] <= "59"
        and text[17:19] <= "59"
    ):
        return text
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError("not an RFC 3339 time like 2026-11-29T15:08:52.123456789Z")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if second == "60":
        raise ValueError("leap seconds (:60) are not accepted")
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        if offset not in ("Z", "z"):
            sign = 1 if offset[0] == "+" else -1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError(f"offset {offset} is out of range")
            moment -= sign * timedelta(hours=hours, minutes=minutes)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid RFC 3339 time ({exc})") from None
    if not 1 <= moment.year <= 9999:
        raise ValueError("time is outside years 0001..9999 after conversion to UTC")
    nanos = (fraction or "").ljust(9, "0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + f".{nanos}Z"


def format_ns(unix_ns: int) -> str:
    """Canonical form of a time given as nanoseconds since the Unix epoch."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    moment = _EPOCH + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def parse_ns(text: str) -> int:
    """Nanoseconds since the Unix epoch of a canonical timestamp (ValueError if not one)."""
    if normalize_time(text) != text:
        raise ValueError(f"{text!r} is not in canonical form")
    moment = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + int(text[20:29])
