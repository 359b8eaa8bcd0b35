"""HTTP ``Range`` requests on one file (RFC 9110 section 14), pure functions.

Browsers seek in an audio element with a single range (``bytes=N-``); that is all
a recording needs.  A header crmagi does not understand (other units, several
ranges) is ignored and the whole file is served, as the RFC allows; a range that
starts past the end is ``416``.
"""
import re
from typing import NamedTuple, Optional

_SINGLE = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)


class Unsatisfiable(ValueError):
    """416: the range lies outside the file."""


class ByteRange(NamedTuple):
    start: int
    end: int          # inclusive

    @property
    def length(self):
        return self.end - self.start + 1

    def content_range(self, size):
        return "bytes %d-%d/%d" % (self.start, self.end, size)


def parse(header: Optional[str], size: int) -> Optional[ByteRange]:
    """The byte range to serve, or None for the whole file; Unsatisfiable for a 416."""
    if not header:
        return None
    match = _SINGLE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:                       # suffix: the last N bytes
        count = int(last)
        if count == 0:
            raise Unsatisfiable("empty suffix range")
        return ByteRange(max(0, size - count), size - 1) if size else _none(size)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None                     # invalid: ignored, like any other bad header
    if start >= size:
        raise Unsatisfiable("range starts at %d, the file has %d bytes" % (start, size))
    return ByteRange(start, min(end, size - 1))


def _none(size):
    raise Unsatisfiable("the file has %d bytes" % size)
