"""`auditlock count URL`: how many events of each category a trail holds.

`verify` proves that what is stored is intact; it passes on a trail of heartbeat
checkpoints alone, when not one event arrived. `count` says whether the trail holds
what was expected: with `--require CATEGORY` it exits 1 (and names the category) when
that category has no event. The kind quickstart runs it after verify for each category
the sample app sends. It also counts the events by who observed them (the app, the
config watcher, the access proxy, the API server: observer.py). It reads the stored
segments without checking them: run verify for that. Exit 0: every required category
has events; 1: one has none; 2: usage or I/O error (including a segment that cannot be
read).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditlock.cli.main import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from auditlock.ledger.escape import escape
from auditlock.ledger.vocabulary import CATEGORIES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "count",
        help="count the stored events by category (did events arrive?)",
        description="Count the events stored under URL (file://DIR, s3://bucket/prefix, "
        "gs://bucket/prefix) by category. Exit 0: every --require'd category has at least "
        "one event; 1: one has none; 2: usage or I/O error. Run verify for integrity.",
    )
    parser.add_argument("url", metavar="URL")
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        choices=CATEGORIES,
        metavar="CATEGORY",
        help=f"fail unless at least one event of this category is stored (repeatable; "
        f"one of {', '.join(CATEGORIES)})",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(func=run)


@dataclass
class Census:
    """Stored events by category, and the streams they are in."""

    categories: Counter[str] = field(default_factory=Counter)
    streams: set[str] = field(default_factory=set)
    observers: Counter[str] = field(default_factory=Counter)  # observer.py: app, ...

    @property
    def events(self) -> int:
        return sum(self.categories.values())


class UnreadableSegment(Exception):
    """A segment could not be read or decoded; the message names it."""


def census(destination: Any) -> Census:
    """Count the events of every segment under `streams/` of `destination`."""
    from auditlock.ledger.errors import FormatError
    from auditlock.ledger.fetch import prefetch
    from auditlock.ledger.limits import MAX_STORED_SEGMENT_BYTES
    from auditlock.ledger.names import parse_name
    from auditlock.ledger.observer import observer_of
    from auditlock.ledger.segment import decode_segment

    found = Census()
    segments = []
    for name in destination.list("streams/"):
        parsed = parse_name(name)
        if parsed is not None and parsed.kind == "segment":
            segments.append(parsed)
            found.streams.add(parsed.stream)
    # The store may be hostile: reads capped at what FORMAT.md allows, a bounded parser.
    read = destination.get
    for segment, data in prefetch(lambda s: read(s.name, MAX_STORED_SEGMENT_BYTES), segments):
        try:
            if isinstance(data, Exception):
                raise data
            for line in decode_segment(data, compressed=segment.compressed):
                event = orjson.loads(line)["event"]
                found.categories[event["category"]] += 1
                found.observers[observer_of(event)] += 1
        except (FormatError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableSegment(f"{segment.name}: cannot be read ({exc})") from None
    return found


def run(args: argparse.Namespace) -> int:
    from auditlock import sinks

    try:
        found = census(sinks.open(args.url))
    except (sinks.DestinationError, UnreadableSegment) as exc:
        print(f"error: {escape(str(exc))}; run `auditlock verify` for the details", file=sys.stderr)
        return EXIT_USAGE
    counts = {category: found.categories.get(category, 0) for category in CATEGORIES}
    missing = [c for c in dict.fromkeys(args.require) if counts[c] == 0]
    if args.json:
        report = {"url": args.url, "events": found.events, "streams": len(found.streams)}
        observers = dict(sorted(found.observers.items()))
        report |= {"categories": counts, "observers": observers, "missing": missing}
        print(json.dumps(report, indent=2))
    else:
        url = escape(args.url)
        print(f"{url}: {found.events} events in {len(found.streams)} streams")
        for category, count in counts.items():
            print(f"  {category:<14} {count}")
        observed = ", ".join(f"{n} {who}" for who, n in sorted(found.observers.items()))
        print(f"  observed by: {observed or 'none'}")
        for category in missing:
            print(f"FAIL: no {category} events are stored under {url}")
    return EXIT_FINDINGS if missing else EXIT_OK
