"""Value rules shared by the event model and the fast normalizer (docs/FORMAT.md, "Events").

Strings must be valid Unicode scalar values (no lone surrogates: they have no UTF-8 form).
Numbers are integers within +-(2**53 - 1); floats are refused so canonical bytes are
unambiguous. Member names of `details` objects must stay in the Basic Multilingual Plane
(see canonical.py for why). Nesting is limited to MAX_DEPTH levels.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from auditlock.ledger.canonical import MAX_SAFE_INTEGER
from auditlock.ledger.errors import BAD_TYPE, BAD_VALUE, INVALID_UTF8

MAX_DEPTH = 16
MAX_SHORT = 1024  # characters in a fixed (non-details) string field


class ValueProblem(ValueError):
    """One rule broken at `path` (relative to the value being checked); `code` is one of
    errors.PROBLEM_CODES."""

    def __init__(self, path: str, reason: str, code: str = BAD_VALUE) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.code = code


class InvalidText(ValueError):
    """A string with no UTF-8 form (errors.INVALID_UTF8)."""


def problem_code(exc: ValueError) -> str:
    """The errors.PROBLEM_CODES member for a ValueError raised by a rule of this module."""
    if isinstance(exc, ValueProblem):
        return exc.code
    return INVALID_UTF8 if isinstance(exc, InvalidText) else BAD_VALUE


def check_text(value: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidText("contains a lone surrogate (not valid Unicode)") from None


def check_short(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_SHORT:
        raise ValueError(f"longer than {MAX_SHORT} characters")
    check_text(value)
    return value


def check_name(value: str) -> None:
    """A details member name: valid Unicode, BMP only."""
    if not value.isascii():
        check_text(value)
        if any(ord(ch) > 0xFFFF for ch in value):
            raise ValueError("member names must not contain characters above U+FFFF")


def normalize_ip(value: str) -> str:
    """The canonical text of an IP address (docs/FORMAT.md, "Events"): IPv4 dotted decimal;
    IPv6 as RFC 5952 section 4 (lowercase, no leading zeros, the longest run of two or more
    zero groups as `::`, the first on a tie), and an IPv4-mapped address (::ffff:0:0/96)
    as RFC 5952 section 5's `::ffff:` + dotted IPv4. Python's own text differs by version
    for mapped addresses (3.11 prints ::ffff:102:304, 3.13 ::ffff:1.2.3.4), so it is
    written out here. A zone id (`%eth0`) is refused: it names an interface of one host."""
    if "%" in value:
        raise ValueError(f"{value[:64]!r}: zone ids (%...) are not accepted in an IP address")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def check_json(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise ValueProblem unless `value` is inside the accepted JSON value space."""
    kind = type(value)
    if kind is str:
        try:
            check_text(value)
        except ValueError as exc:
            raise ValueProblem(path, str(exc), problem_code(exc)) from None
    elif kind is bool or value is None:
        return
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueProblem(path, "integer outside +-(2**53 - 1); send it as a string")
    elif kind is float:
        raise ValueProblem(path, "floats are not allowed in events; send decimals as strings")
    elif kind is dict:
        if depth >= MAX_DEPTH:
            raise ValueProblem(path, f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise ValueProblem(path, f"member name {key!r} is not a string")
            try:
                check_name(key)
            except ValueError as exc:
                path_to = f"{path}.{key}" if path else key
                raise ValueProblem(path_to, str(exc), problem_code(exc)) from None
            check_json(item, f"{path}.{key}" if path else key, depth + 1)
    elif kind is list:
        if depth >= MAX_DEPTH:
            raise ValueProblem(path, f"nested deeper than {MAX_DEPTH} levels")
        for index, item in enumerate(value):
            check_json(item, f"{path}[{index}]", depth + 1)
    else:
        raise ValueProblem(path, f"{kind.__name__} is not a JSON value", BAD_TYPE)
