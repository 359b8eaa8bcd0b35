"""The Asterisk Manager Interface wire format as pure functions: no sockets, no clocks.

What Asterisk 22 sends (shared/fixtures/asterisk/*.ami.txt): a banner line
``Asterisk Call Manager/11.0.0\\r\\n``, then messages of ``Key: Value\\r\\n``
lines closed by an empty line.  Keys repeat in some messages, so a Message
keeps every header in order.  Caller-ID names and numbers in channel-snapshot
headers are C-escaped (``Anna \\"Annie\\" O\\'Neil``), except in
OriginateResponse, which carries them raw; ``unescape`` undoes that so the call
model sees the same text as AGI.
"""
import re
from typing import Iterable, List, Optional, Tuple, Union

from agi.errors import AmiProtocolError

BANNER_PREFIX = b"Asterisk Call Manager/"
MAX_FRAME = 256 * 1024     # the largest recorded message is a few KB; bigger is not AMI
_EOM = b"\r\n\r\n"
# Channel-snapshot keys end so, with or without a prefix (DestCallerIDName, TransfereeConnectedLineNum).
_SNAPSHOT_KEYS = ("CallerIDName", "CallerIDNum", "ConnectedLineName", "ConnectedLineNum")
_ESCAPE = re.compile(r"\\(.)")
_PLAIN_KEY = re.compile(r"[^\r\n: ]+")     # a key the text can be searched for (Message._find)
_ABSENT = object()
_NEEDLES = {}                               # key -> what Message._find searches for


class Message:
    """One AMI message: ordered headers; ``get`` returns the first value of a key.

    A message read off the wire (``parse_frame``) keeps its text and reads a key when asked:
    the call model asks for about 7 of an event's 20 lines, and one C-level search of the text
    costs a fraction of reading every line in Python (issue #12).  ``headers`` is
    read whole the first time it is asked for.  Both readings follow the same rule (see
    ``_header_lines``); a message built from a list of headers is read from that list."""

    __slots__ = ("_headers", "_first", "_text", "_unescape", "escaped")

    def __init__(self, headers: List[Tuple[str, str]], escaped=True):
        """``escaped`` False: no value holds a backslash (``unescape`` has nothing to do)."""
        self._headers = headers
        self._first = dict(reversed(headers))       # the first value of a repeated key wins
        self._text = None
        self._unescape = False
        self.escaped = escaped

    @classmethod
    def _of_text(cls, text: str, escaped: bool, unescape=False) -> "Message":
        message = cls.__new__(cls)
        message._headers = None
        message._first = {}                         # a cache of the keys asked for
        message._text = text                        # CRLF + the frame's text + CRLF
        message._unescape = unescape
        message.escaped = escaped
        return message

    @property
    def headers(self) -> List[Tuple[str, str]]:
        if self._headers is None:
            headers = _header_lines(self._text)
            if self._unescape:
                headers = [(k, _unescaped(v) if "\\" in v and k.endswith(_SNAPSHOT_KEYS) else v)
                           for k, v in headers]
            self._headers = headers
        return self._headers

    def get(self, key, default=None):
        value = self._first.get(key, _ABSENT)
        if value is _ABSENT and self._text is not None:
            value = self._first[key] = self._find(key)
        return default if value is _ABSENT else value

    def _find(self, key):
        """The first value of ``key``, or _ABSENT: the line that starts with the key and its
        colon (lines are CRLF-separated, the text starts and ends with one).  A key that no
        such search can find (empty, with a space, a colon or a line break) is looked up in
        the whole reading."""
        needle = _NEEDLES.get(key) or _needle(key)
        if not needle:
            return dict(reversed(self.headers)).get(key, _ABSENT)
        text = self._text
        start = text.find(needle)
        if start < 0:
            return _ABSENT
        start += len(needle)
        value = text[start:text.find("\r\n", start)]
        if value.startswith(" "):
            value = value[1:]
        if self._unescape and "\\" in value and key.endswith(_SNAPSHOT_KEYS):
            value = _unescaped(value)
        return value

    def __getitem__(self, key):
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key):
        return self.get(key, _ABSENT) is not _ABSENT

    def getall(self, key) -> List[str]:
        return [value for k, value in self.headers if k == key]

    @property
    def event(self) -> Optional[str]:
        return self.get("Event")

    @property
    def response(self) -> Optional[str]:
        return self.get("Response")

    @property
    def action_id(self) -> Optional[str]:
        return self.get("ActionID")

    def __repr__(self):
        kind = "Event: %s" % self.event if self.event else "Response: %s" % self.response
        return "<Message %s %s>" % (kind, self.action_id or "")


def split_banner(buf: bytes) -> Tuple[Optional[str], bytes]:
    """(banner, rest) once the first line has arrived, else (None, buf)."""
    index = buf.find(b"\r\n")
    if index < 0:
        if len(buf) > 256:
            raise AmiProtocolError("no AMI banner in the first 256 bytes")
        return None, buf
    line = buf[:index]
    if not line.startswith(BANNER_PREFIX):
        raise AmiProtocolError("not an AMI banner: %r" % line[:80])
    return line.decode("ascii", "replace"), buf[index + 2:]


def split_frames(buf: bytes) -> Tuple[List[bytes], bytes]:
    """Complete messages (without their closing blank line) and the bytes left over."""
    frames = []
    start = 0
    while True:
        end = buf.find(_EOM, start)
        # The same limit for a frame that came whole and one still arriving (its rest may end
        # in 3 bytes of the terminator): what is refused must not depend on recv() boundaries.
        if (end if end >= 0 else len(buf) - len(_EOM) + 1) - start > MAX_FRAME:
            raise AmiProtocolError("AMI message longer than %d bytes" % MAX_FRAME)
        if end < 0:
            return frames, buf[start:]
        if end > start:            # stray empty lines between messages are skipped
            frames.append(buf[start:end])
        start = end + len(_EOM)


def _needle(key) -> str:
    """CRLF + key + colon, or '' for a key no search can find; kept for the next message."""
    needle = "\r\n%s:" % key if key and _PLAIN_KEY.fullmatch(key) else ""
    if len(_NEEDLES) < 4096:            # the keys crmagi asks for are a few dozen constants
        _NEEDLES[key] = needle
    return needle


def parse_frame(frame: bytes) -> Message:
    """``Key: Value`` lines -> Message.  A line without a colon (command output) is kept under ''."""
    # Decoded whole: "replace" turns no CR or LF into anything else.
    text = "\r\n" + frame.decode("utf-8", "replace") + "\r\n"
    start = 2
    while text.startswith("\r\n", start):         # empty lines are no headers
        start += 2
    key, sep, _ = text[start:text.find("\r\n", start)].partition(":")
    if not (sep and key and " " not in key):
        raise AmiProtocolError("AMI message does not start with a header: %r" % frame[:80])
    return Message._of_text(text, escaped=b"\\" in frame)


def _header_lines(text: str) -> List[Tuple[str, str]]:
    """Every header: the key before a line's first colon (not empty, no space in it), the value
    after it less one leading space; any other non-empty line whole under ''."""
    headers = []
    for line in text.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            headers.append((key, value[1:] if value.startswith(" ") else value))
        elif line:
            headers.append(("", line))
    return headers


def unescape(message: Message) -> Message:
    """Undo Asterisk's C-escaping of caller-ID headers of channel snapshots."""
    if not message.escaped or message.event == "OriginateResponse":
        return message                  # nearly every message has no backslash at all
    if message._text is not None:       # read off the wire: unescaped as each key is read
        return Message._of_text(message._text, True, unescape=True)
    headers = None
    for index, (key, value) in enumerate(message.headers):
        if "\\" in value and key.endswith(_SNAPSHOT_KEYS):
            if headers is None:
                headers = list(message.headers)
            headers[index] = (key, _unescaped(value))
    return message if headers is None else Message(headers)


def _unescaped(value: str) -> str:
    # split() with the group keeps each escaped character and drops its backslash.
    return "".join(_ESCAPE.split(value))


def _check(text, what):
    text = str(text)
    if "\r" in text or "\n" in text:
        raise ValueError("AMI %s may not contain a line break: %r" % (what, text[:80]))
    return text


def format_action(action: str, action_id: str,
                  headers: Union[Iterable[Tuple[str, object]], dict] = ()) -> bytes:
    """``Action: X`` + ``ActionID`` + headers (a list keeps repeated keys such as Variable).

    A value with a line break would let data inject a second action, so it is refused.
    """
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    lines = ["Action: %s" % _check(action, "action"), "ActionID: %s" % _check(action_id, "ActionID")]
    for key, value in items:
        if value is None:
            continue
        lines.append("%s: %s" % (_check(key, "header"), _check(value, "value")))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
