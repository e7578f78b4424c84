"""What the spool must remember about each record not yet released: its size (the space
it holds) and when it was spooled (the upload-lag metric). 12 bytes a record in two
arrays, not a dict entry each: a spool full of tiny records (a Forward chunk with no
entries makes a record of about 50 bytes) holds millions of them.
"""

from __future__ import annotations

from array import array


class Unreleased:
    """Records after a release point, by number; numbers only grow."""

    def __init__(self, released: int) -> None:
        self.base = released + 1  # the number of the first entry
        self._sizes = array("I")
        self._times = array("q")
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._sizes)

    def add(self, number: int, spooled_ns: int, size: int) -> None:
        missing = number - self.base - len(self._sizes)
        if missing < 0:
            raise ValueError(f"record {number} is not after record {self.base + len(self) - 1}")
        if missing:  # records known lost (recovery.py gaps): they hold no space
            self._sizes.frombytes(bytes(4 * missing))
            self._times.frombytes(bytes(8 * missing))
        self._sizes.append(size)
        self._times.append(spooled_ns)
        self.bytes += size

    def release(self, number: int) -> None:
        """Forget every record up to `number`."""
        count = min(len(self._sizes), number - self.base + 1)
        if count > 0:
            self.bytes -= sum(self._sizes[:count])
            del self._sizes[:count]
            del self._times[:count]
        self.base = max(self.base, number + 1)

    def oldest_ns(self) -> int | None:
        for spooled_ns in self._times:
            if spooled_ns:
                return spooled_ns
        return None
