"""Keeping the sidecar's resident memory small (it shares the pod's memory limit).

glibc malloc gives each thread that allocates its own arena, and keeps freed memory
mapped. The sidecar's upload threads allocate whole segments, so without care RSS grows
by tens of MiB that are free but not returned. Three remedies, all no-ops off glibc:

* `limit_arenas()` at start-up: at most two malloc arenas (like MALLOC_ARENA_MAX=2), and
  a fixed mmap threshold of 128 KiB (like MALLOC_MMAP_THRESHOLD_=131072): glibc raises
  the threshold each time a big block is freed, after which segment-sized buffers (and
  the upload's multipart copies) come from the heap and stay resident between trims;
  fixed, they are mapped and unmapped on their own (peak RSS at 10,000 events/s with
  gs:// 63.1-63.4 MiB instead of 64.7-67.5, docs/benchmarks.md);
* `trim()` every few seconds: `malloc_trim(0)` hands freed pages back to the kernel.

And the cyclic garbage collector, tuned once start-up is done (`settle_gc()`): the
start-up objects (modules, config) are frozen out of every later collection, and the
young generation collects after YOUNG_GC_THRESHOLD net allocations instead of 700. A
Forward chunk of 1,000 events is 1,000+ objects alive at once, so at 700 nearly every
chunk started a young collection that walked its live objects and promoted them to be
walked again; at 10,000 a chunk comes and goes between collections (2.4 % of the
collector's CPU was the GC's; docs/benchmarks.md), and garbage cycles are still
collected after at most that many allocations (about a MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value, kept fixed
TRIM_SECONDS = 5.0
YOUNG_GC_THRESHOLD = 10_000

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(name)
    return _libc


def limit_arenas(arenas: int = 2) -> None:
    libc = _lib()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_ARENA_MAX, arenas)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def trim() -> None:
    libc = _lib()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


async def trim_forever(interval: float = TRIM_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        trim()


def settle_gc() -> None:
    """After start-up: freeze what exists, collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)
