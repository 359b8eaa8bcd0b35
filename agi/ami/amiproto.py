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
_SNAPSHOT_KEY = re.compile(r"(CallerIDName|CallerIDNum|ConnectedLineName|ConnectedLineNum)$")
_ESCAPE = re.compile(r"\\(.)")


class Message:
    """One AMI message: ordered headers; ``get`` returns the first value of a key."""

    __slots__ = ("headers", "_first", "escaped")

    def __init__(self, headers: List[Tuple[str, str]], escaped=True):
        """``escaped`` False: no value holds a backslash (``unescape`` has nothing to do)."""
        self.headers = headers
        self._first = dict(reversed(headers))       # the first value of a repeated key wins
        self.escaped = escaped

    def get(self, key, default=None):
        return self._first.get(key, default)

    def __getitem__(self, key):
        return self._first[key]

    def __contains__(self, key):
        return key in self._first

    def getall(self, key) -> List[str]:
        return [value for k, value in self.headers if k == key]

    @property
    def event(self) -> Optional[str]:
        return self._first.get("Event")

    @property
    def response(self) -> Optional[str]:
        return self._first.get("Response")

    @property
    def action_id(self) -> Optional[str]:
        return self._first.get("ActionID")

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


def parse_frame(frame: bytes) -> Message:
    """``Key: Value`` lines -> Message.  A line without a colon (command output) is kept under ''."""
    headers = []
    # Decoded whole, then split: "replace" turns no CR or LF into anything else.
    for line in frame.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            headers.append((key, value[1:] if value.startswith(" ") else value))
        elif line:
            headers.append(("", line))
    if not headers or not headers[0][0]:
        raise AmiProtocolError("AMI message does not start with a header: %r" % frame[:80])
    return Message(headers, escaped=b"\\" in frame)


def unescape(message: Message) -> Message:
    """Undo Asterisk's C-escaping of caller-ID headers of channel snapshots."""
    if not message.escaped or message.event == "OriginateResponse":
        return message                  # nearly every message has no backslash at all
    changed = False
    headers = []
    for key, value in message.headers:
        if "\\" in value and _SNAPSHOT_KEY.search(key):
            value, changed = _ESCAPE.sub(r"\1", value), True
        headers.append((key, value))
    return Message(headers) if changed else message


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
