"""Tier a: the AMI codec on every byte Asterisk 22 sent in the recordings."""
import glob
import os

import pytest

from agi.ami import amiproto
from agi.errors import AmiProtocolError
from conftest import ASTERISK

STREAMS = sorted(glob.glob(str(ASTERISK / "*.ami.txt")))


def messages(path):
    data = open(path, "rb").read()
    banner, rest = amiproto.split_banner(data)
    frames, rest = amiproto.split_frames(rest)
    assert rest == b""
    return banner, [amiproto.unescape(amiproto.parse_frame(f)) for f in frames]


@pytest.mark.parametrize("path", STREAMS, ids=os.path.basename)
def test_every_recorded_stream_parses_completely(path):
    banner, msgs = messages(path)
    assert banner == "Asterisk Call Manager/11.0.0"
    assert msgs[0].response == "Success" and msgs[0].action_id == "login-1"
    assert all(m.event or m.response for m in msgs)
    assert all(key for m in msgs for key, _ in m.headers)          # no stray text lines
    if not path.endswith("09-restart-before.ami.txt"):
        assert msgs[-1].response == "Goodbye"


def test_stream_split_at_every_byte_boundary_gives_the_same_messages():
    data = open(ASTERISK / "05a-queue-ringall.ami.txt", "rb").read()
    _, rest = amiproto.split_banner(data)
    whole, _ = amiproto.split_frames(rest)
    got, buf = [], b""
    for i in range(0, len(rest), 997):                  # arbitrary TCP segment sizes
        frames, buf = amiproto.split_frames(buf + rest[i:i + 997])
        got.extend(frames)
    assert got == whole and buf == b""


def test_caller_names_are_unescaped_except_in_originate_response():
    _, msgs = messages(ASTERISK / "03d-inbound-hostile-callerid.ami.txt")
    names = {m.get("CallerIDName") for m in msgs if m.event == "DialBegin"}
    assert "Robert'); DROP TABLE calls;-- \"Bobby\"" in names
    raw = [m for m in msgs if m.event == "OriginateResponse"]
    assert raw and raw[0].get("CallerIDName") == "Robert'); DROP TABLE calls;-- \"Bobby\""
    dial = [m for m in msgs if m.event == "DialBegin"][0]
    assert dial.get("DestConnectedLineName") == "Robert'); DROP TABLE calls;-- \"Bobby\""
    cdr = [m for m in msgs if m.event == "Cdr"][0]
    assert cdr.get("CallerID").startswith('"Robert\'); DROP TABLE calls;-- \\"Bobby\\""')   # not a snapshot


def _read_as_documented(frame):
    """The one reading rule (``amiproto._header_lines``: every line, in Python), which the lazy
    reading of a message off the wire must agree with for every key it is asked for."""
    return amiproto._header_lines(frame.decode("utf-8", "replace"))


RECORDED_FRAMES = [f for path in STREAMS
                   for f in amiproto.split_frames(amiproto.split_banner(open(path, "rb").read())[1])[0]]
ASKED = ("Event", "Response", "ActionID", "Uniqueid", "Linkedid", "CallerIDName", "DestCallerIDNum",
         "Nonexistent", "", "Key ", "A:B", "Tab\tKey", "Lone\rCR", "ConnectedLineName")


def _same_reading(message, headers, keys):
    """What every accessor of ``message`` gives is what a message built from ``headers`` (the
    documented reading) gives, for each key; asked twice, as the lazy reading keeps answers."""
    eager = amiproto.Message(headers)
    for key in list(keys) + list(keys):
        assert message.get(key, "-") == eager.get(key, "-"), key
        assert (key in message) == (key in eager), key
        if key in eager:
            assert message[key] == eager[key], key
        else:
            with pytest.raises(KeyError):
                message[key]
        assert message.getall(key) == eager.getall(key), key
    assert message.headers == headers
    assert (message.event, message.response, message.action_id) == (eager.event, eager.response, eager.action_id)


def test_every_recorded_frame_reads_as_documented():
    assert len(RECORDED_FRAMES) > 1000
    for frame in RECORDED_FRAMES:
        headers = _read_as_documented(frame)
        assert amiproto.parse_frame(frame).headers == headers, frame[:80]
        keys = {k for k, _ in headers} | set(ASKED)
        _same_reading(amiproto.parse_frame(frame), headers, keys)       # keys first, then headers
        message = amiproto.parse_frame(frame)
        message.headers
        _same_reading(message, headers, keys)                           # headers first


def test_every_recorded_frame_unescapes_as_documented():
    for frame in RECORDED_FRAMES:
        eager = amiproto.unescape(amiproto.Message(_read_as_documented(frame), escaped=b"\\" in frame))
        keys = {k for k, _ in eager.headers} | set(ASKED)
        _same_reading(amiproto.unescape(amiproto.parse_frame(frame)), eager.headers, keys)
        message = amiproto.unescape(amiproto.parse_frame(frame))
        message.headers
        _same_reading(message, eager.headers, keys)


ODD_LINES = [b"Cause-txt: Normal Clearing", b"Key:value", b"Key:", b"Key: ", b"Key:  two spaces",
             b"A:B: c", b"Output: x: y", b"Value: a: b: c", b"No such command 'x' (try: help)",
             b": empty key", "\u041a\u043b\u044e\u0447: \u0437\u043d".encode(), b"1abc: digit first",
             b"_x: y", b"Tab\tKey: v", b"Key : spaced", b"Key: caf\xc3\xa9", b"Key: bad \xff byte",
             b"Bad\xffKey: v", b"Lone\rCR: x", b"Lone\nLF: x", b"Key: \\\"quoted\\\"", b"NoColonAtAll"]


@pytest.mark.parametrize("line", ODD_LINES)
@pytest.mark.parametrize("where", ["middle", "first", "last", "after a blank", "twice"])
def test_odd_lines_read_as_documented(line, where):
    frame = {"middle": b"Event: X\r\n%s\r\nTail: end", "first": b"%s\r\nEvent: X",
             "last": b"Event: X\r\n%s", "after a blank": b"\r\n\r\nEvent: X\r\n%s",
             "twice": b"Event: X\r\n%s\r\nA: 1\r\n%s\r\n\r\n"}[where]
    frame = frame.replace(b"%s", line)
    headers = _read_as_documented(frame)
    if not headers or not headers[0][0]:
        with pytest.raises(AmiProtocolError):
            amiproto.parse_frame(frame)
        return
    keys = {k for k, _ in headers} | set(ASKED) | {line.decode("utf-8", "replace").partition(":")[0]}
    _same_reading(amiproto.parse_frame(frame), headers, keys)
    _same_reading(amiproto.unescape(amiproto.parse_frame(frame)),
                  amiproto.unescape(amiproto.Message(headers, escaped=b"\\" in frame)).headers, keys)


def test_snapshot_names_with_any_prefix_are_unescaped_like_c():
    frame = (b"Event: AttendedTransfer\r\nOrigTransfererCallerIDName: O\\'Neil \\\\ \\\"Bo\\\"\r\n"
             b"TransfereeConnectedLineNum: 0\\\\\r\nSecondTransfererCallerIDNum: ends\\\r\n"
             b"Variable: a\\'b")
    msg = amiproto.unescape(amiproto.parse_frame(frame))
    assert msg.get("OrigTransfererCallerIDName") == "O'Neil \\ \"Bo\""
    assert msg.get("TransfereeConnectedLineNum") == "0\\"
    assert msg.get("SecondTransfererCallerIDNum") == "ends\\"      # a lone trailing backslash stays
    assert msg.get("Variable") == "a\\'b"                          # not a snapshot key


def test_repeated_keys_are_kept_in_order():
    msg = amiproto.parse_frame(b"Event: X\r\nVariable: A=1\r\nVariable: B=2\r\nEmpty: \r\nNoSpace:x")
    assert msg.getall("Variable") == ["A=1", "B=2"] and msg.get("Empty") == "" and msg["NoSpace"] == "x"
    assert msg.get("Variable") == "A=1" and msg["Variable"] == "A=1"     # the first one wins


def test_format_action_matches_the_recorded_login():
    sent = open(ASTERISK / "01-inbound-answered.ami-sent.txt", "rb").read()
    login = amiproto.format_action("Login", "login-1", [("Username", "crm"), ("Secret", "crmsecret"),
                                                        ("Events", "on")])
    assert login.replace(b"ActionID: login-1\r\n", b"") in sent.replace(b"ActionID: login-1\r\n", b"")
    originate = amiproto.format_action("Originate", "c2c-101-0001", [
        ("Channel", "Local/101@phones/n"), ("Variable", "A=1"), ("Variable", "B=2")])
    assert originate.count(b"Variable: ") == 2 and originate.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("value", ["x\r\nAction: Originate", "x\nEvents: on"])
def test_format_action_refuses_header_injection(value):
    with pytest.raises(ValueError):
        amiproto.format_action("Originate", "1", [("CallerID", value)])


@pytest.mark.parametrize("junk", [b"HTTP/1.1 200 OK\r\n", b"x" * 300])
def test_junk_instead_of_a_banner(junk):
    with pytest.raises(AmiProtocolError):
        amiproto.split_banner(junk)


def test_oversized_message_is_refused():
    with pytest.raises(AmiProtocolError):
        amiproto.split_frames(b"Event: X\r\nData: " + b"y" * (amiproto.MAX_FRAME + 1))


def test_frame_without_header_is_refused():
    with pytest.raises(AmiProtocolError):
        amiproto.parse_frame(b"just some text")


def test_a_frame_over_the_limit_is_refused_however_it_arrives():
    """Found by bench/fuzz.py: a complete frame over MAX_FRAME was accepted when it came in one
    piece, refused when it came in two; the limit must not depend on recv() boundaries."""
    frame = b"Event: X\r\nData: " + b"a" * amiproto.MAX_FRAME + b"\r\n\r\n"
    with pytest.raises(AmiProtocolError):
        amiproto.split_frames(frame)
    with pytest.raises(AmiProtocolError):
        amiproto.split_frames(frame[:amiproto.MAX_FRAME + 100])
