"""Range headers as an audio element sends them (RFC 9110 section 14)."""
import pytest

from webpush.ranges import ByteRange, Unsatisfiable, parse


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-", ByteRange(0, 999)),
    ("bytes=100-199", ByteRange(100, 199)),
    ("bytes=900-5000", ByteRange(900, 999)),
    ("bytes=-100", ByteRange(900, 999)),
    ("bytes=-5000", ByteRange(0, 999)),
    (" bytes = 5 - 6 ", ByteRange(5, 6)),
    ("bytes=999-999", ByteRange(999, 999)),
])
def test_single_ranges(header, expected):
    assert parse(header, 1000) == expected


@pytest.mark.parametrize("header", [None, "", "bytes=", "bytes=-", "items=0-1", "bytes=0-1,5-6", "bytes=5-2",
                                    "bytes=a-b", "bytes=٠-١"])
def test_headers_served_as_the_whole_file(header):
    assert parse(header, 1000) is None


@pytest.mark.parametrize("header, size", [("bytes=1000-", 1000), ("bytes=2000-3000", 1000), ("bytes=-0", 1000),
                                          ("bytes=0-", 0), ("bytes=-5", 0)])
def test_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        parse(header, size)


def test_content_range():
    assert ByteRange(100, 199).content_range(1000) == "bytes 100-199/1000"
    assert ByteRange(100, 199).length == 100
