"""Text from a ledger or a store, made safe to show a person.

Object names, stream contents and error messages can carry anything (strings in events
are evidence and keep every character). Shown raw on a terminal, a planted name could
move the cursor, rewrite earlier lines ("PASS"), or reorder what is read with
bidirectional overrides. Every human-facing output passes its text through `escape`:
C0 and C1 controls, DEL, the bidirectional embedding/override/isolate marks, the
line/paragraph separators and lone surrogates become visible `\\xNN` / `\\uNNNN` escapes,
and a backslash becomes `\\\\` so an escape in the output is never ambiguous. JSON output
needs none of this: JSON escapes controls itself and a program reads it.
"""

from __future__ import annotations

import re

# C0, DEL, C1; ALM, LRM, RLM; LRE..RLO; LRI..PDI; line and paragraph separators; lone
# surrogates (a file name that is not UTF-8 arrives as them, and cannot be printed); and
# the backslash that introduces our own escapes.
_UNSAFE = re.compile(
    "[\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
    "\\u2028\\u2029\\ud800-\\udfff\\\\]"
)


def _escape_one(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control, bidi-control and separator character escaped."""
    return _UNSAFE.sub(_escape_one, text)
