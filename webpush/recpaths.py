"""Where a recorded path may lead, and what kind of audio it is (pure functions).

crmagi stores what Asterisk reported (``MIXMONITOR_FILENAME``: absolute, e.g.
``/var/spool/asterisk/monitor/in-....wav``, or relative to Asterisk's monitor
folder).  A request never names a file: the file is the one recorded for the
Call, and it must lie inside the store.  A recorded path that climbs out
(``../``), is absolute outside the monitor folder, or holds control characters
is refused, whatever the file system would make of it.
"""
import posixpath
import struct
from typing import NamedTuple, Optional

MAX_PATH = 512


class OutsideStore(ValueError):
    """The recorded path does not stay inside the recordings store."""


class Format(NamedTuple):
    name: str
    sox_input: Optional[tuple]   # None: served as is; else the sox arguments that read it
    content_type: str


WAV_PCM = Format("wav", None, "audio/wav")
MP3 = Format("mp3", None, "audio/mpeg")
_BY_EXTENSION = {
    # Asterisk's format names: "WAV" is wav49 (GSM 6.10 inside RIFF), "gsm" raw GSM frames.
    ".WAV": Format("wav49", ("-t", "wav"), "audio/wav"),
    ".gsm": Format("gsm", ("-t", "gsm", "-r", "8000", "-c", "1"), "audio/wav"),
    ".ulaw": Format("ulaw", ("-t", "ul", "-r", "8000", "-c", "1"), "audio/wav"),
    ".ul": Format("ulaw", ("-t", "ul", "-r", "8000", "-c", "1"), "audio/wav"),
    ".alaw": Format("alaw", ("-t", "al", "-r", "8000", "-c", "1"), "audio/wav"),
    ".al": Format("alaw", ("-t", "al", "-r", "8000", "-c", "1"), "audio/wav"),
    ".sln": Format("sln", ("-t", "raw", "-e", "signed-integer", "-b", "16", "-r", "8000", "-c", "1"),
                   "audio/wav"),
    ".wav": WAV_PCM, ".wav16": WAV_PCM,
    ".mp3": MP3,
}
WAV_OTHER = Format("wav-coded", ("-t", "wav"), "audio/wav")   # a .wav that is not PCM: sox reads it


def relative_name(recorded: str, monitor_dir: str) -> str:
    """The recording's path relative to the store, or OutsideStore."""
    if not isinstance(recorded, str) or not recorded or len(recorded) > MAX_PATH:
        raise OutsideStore("no recorded path")
    if any(ord(ch) < 32 or ch in "\\\x7f" for ch in recorded):
        raise OutsideStore("control character or backslash in the recorded path")
    parts = recorded.split("/")
    if ".." in parts:
        raise OutsideStore("the recorded path climbs out of the store (..)")
    if recorded.startswith("/"):
        root = posixpath.normpath(monitor_dir or "/") if monitor_dir else ""
        path = posixpath.normpath(recorded)
        if not root or root == "/" or not path.startswith(root + "/"):
            raise OutsideStore("absolute path outside the monitor folder %s" % (monitor_dir or "(none)"))
        recorded = path[len(root) + 1:]
    name = posixpath.normpath(recorded)
    if name in (".", "") or name.startswith("/"):
        raise OutsideStore("the recorded path names no file")
    return name


def format_of(name: str) -> Optional[Format]:
    """By extension (Asterisk names files by format), None when crmagi cannot serve it."""
    base = posixpath.basename(name)
    dot = base.rfind(".")
    return _BY_EXTENSION.get(base[dot:]) if dot > 0 else None


def wav_format_tag(header: bytes) -> Optional[int]:
    """The WAVE fmt chunk's format tag (1 = PCM, 0x31 = GSM 6.10, 7 = mu-law ...) or None."""
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(header):
        chunk, size = header[offset:offset + 4], struct.unpack_from("<I", header, offset + 4)[0]
        if chunk == b"fmt ":
            return struct.unpack_from("<H", header, offset + 8)[0] if offset + 10 <= len(header) else None
        offset += 8 + size + (size & 1)
    return None
