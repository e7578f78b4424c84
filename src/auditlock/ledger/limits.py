"""The sizes docs/FORMAT.md allows for each stored object ("Objects", size limits).

A writer never makes anything larger, so a reader may refuse anything larger without
reading it all: these caps are what keep `verify` bounded in memory on a hostile store
(a segment that is a link to /dev/zero, a gzip bomb, a planted multi-gigabyte object).
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# One line (docs/FORMAT.md section 5), without its LF; the canonical event inside it is
# at most MAX_EVENT_BYTES, leaving room for the envelope (epoch, prev, seq, stream).
MAX_LINE_BYTES = 16 * MIB
MAX_EVENT_BYTES = MAX_LINE_BYTES - 4 * KIB
# A segment's lines with their LFs (section 6), after gzip decompression; and the stored
# object itself (gzip of incompressible bytes is a little larger than its input).
MAX_SEGMENT_BYTES = 64 * MIB
MAX_STORED_SEGMENT_BYTES = MAX_SEGMENT_BYTES + 1 * MIB
# Small objects: a checkpoint holds at most 64 frontier nodes, a key is one PEM block.
MAX_CHECKPOINT_BYTES = 64 * KIB
MAX_KEY_BYTES = 16 * KIB
MAX_ROTATION_BYTES = 16 * KIB
MAX_CERTIFICATE_BYTES = 16 * KIB
MAX_RETENTION_RECORD_BYTES = 4 * KIB
# A witness record names every stream of a destination (about 200 bytes each).
MAX_WITNESS_BYTES = 16 * MIB
# JSON nesting any reader accepts (orjson's own bound; it never recurses in Python). An
# event is at most 16 levels deep inside `details` (section 3), far below this.
MAX_JSON_DEPTH = 1024
