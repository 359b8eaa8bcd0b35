"""PHP ``unserialize()`` of plain data (pure): what SuiteCRM keeps in ``user_preferences.contents``.

SuiteCRM stores a user's preferences as ``base64_encode(serialize($array))``
(modules/UserPreferences/UserPreference.php).  Only plain values are read here:
arrays, strings, integers, floats, booleans and null.  Objects (``O:``, ``C:``) and
references are refused with ``PhpSerialError``: preferences never hold them, and an
unserializer that builds objects is how PHP applications get exploited.

Strings are measured in bytes (PHP strings are bytes; SuiteCRM writes UTF-8) and
decoded as UTF-8 with replacement, so a cut multi-byte character costs a glyph, not
the whole preference set.  A small function rather than the ``phpserialize`` package:
that one was last released in 2012 and builds objects on request.
"""
import re
from typing import Any, Tuple

MAX_DEPTH = 32          # preferences nest two or three levels; a deeper blob is junk
_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|-?INF|NAN")


class PhpSerialError(ValueError):
    """Not a serialized plain PHP value; the message says where."""


def loads(data: bytes) -> Any:
    """The value serialized in ``data`` (PHP arrays become dicts with int or str keys)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    value, end = _value(data, 0, 0)
    if end != len(data):
        raise PhpSerialError("trailing bytes at offset %d" % end)
    return value


def _value(data: bytes, pos: int, depth: int) -> Tuple[Any, int]:
    kind = data[pos:pos + 1]
    if kind == b"N":
        return None, _expect(data, pos + 1, b";")
    if data[pos + 1:pos + 2] != b":":
        raise PhpSerialError("unexpected %r at offset %d" % (data[pos:pos + 2], pos))
    if kind == b"b":
        text, end = _until(data, pos + 2, b";")
        if text not in (b"0", b"1"):
            raise PhpSerialError("bad boolean at offset %d" % pos)
        return text == b"1", end
    if kind == b"i":
        text, end = _until(data, pos + 2, b";")
        if not re.fullmatch(rb"[-+]?[0-9]+", text):
            raise PhpSerialError("bad integer at offset %d" % pos)
        return int(text), end
    if kind == b"d":
        text, end = _until(data, pos + 2, b";")
        if not _NUMBER.fullmatch(text):
            raise PhpSerialError("bad float at offset %d" % pos)
        return float(text.replace(b"INF", b"inf").replace(b"NAN", b"nan")), end
    if kind == b"s":
        return _string(data, pos)
    if kind == b"a":
        return _array(data, pos, depth)
    raise PhpSerialError("%r values are not read (offset %d)" % (kind.decode("latin-1"), pos))


def _string(data, pos):
    size, start = _until(data, pos + 2, b":")
    if not size.isdigit():
        raise PhpSerialError("bad string length at offset %d" % pos)
    start = _expect(data, start, b'"')
    end = start + int(size)
    if end > len(data):
        raise PhpSerialError("string at offset %d runs past the end" % pos)
    text = data[start:end].decode("utf-8", "replace")
    return text, _expect(data, _expect(data, end, b'"'), b";")


def _array(data, pos, depth):
    if depth >= MAX_DEPTH:
        raise PhpSerialError("nested deeper than %d" % MAX_DEPTH)
    count, pos = _until(data, pos + 2, b":")
    if not count.isdigit():
        raise PhpSerialError("bad array size at offset %d" % pos)
    pos = _expect(data, pos, b"{")
    result = {}
    for _ in range(int(count)):
        key, pos = _value(data, pos, depth + 1)
        if not isinstance(key, (int, str)):
            raise PhpSerialError("array key of type %s at offset %d" % (type(key).__name__, pos))
        result[key], pos = _value(data, pos, depth + 1)
    return result, _expect(data, pos, b"}")


def _until(data, pos, stop):
    end = data.find(stop, pos)
    if end < 0:
        raise PhpSerialError("missing %r after offset %d" % (stop, pos))
    return data[pos:end], end + 1


def _expect(data, pos, char):
    if data[pos:pos + 1] != char:
        raise PhpSerialError("expected %r at offset %d" % (char, pos))
    return pos + 1
