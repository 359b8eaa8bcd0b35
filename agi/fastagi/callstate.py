"""Pure helpers for the call state that travels on the channel between AGI requests.

The ``incoming``/``outgoing`` request stores the whole start of the call in
one channel variable (``CRM_CALL``); the ``hangup`` request reads it back, so
the hangup alone can write a complete Call even if the start write was lost.
"""
import re
from datetime import datetime, timezone
from urllib.parse import unquote

from crmsync.models import CallRecord

VERSION = "v1"
FIELDS = ("call_id", "linkedid", "uniqueid", "direction", "number", "did", "extension",
          "parent_module", "parent_id", "parent_name", "link_table", "link_column",
          "assigned_user_id", "lookup_status", "started_at")
PLACEHOLDERS = {"", "unknown", "<unknown>"}
_TECH = re.compile(r"^[A-Za-z][A-Za-z0-9]*/")
_ESCAPE = {ord(c): "%%%02X" % ord(c) for c in "%|\r\n\x00"}
MAX_NAME = 100    # keeps CRM_CALL far below Asterisk's 2047-byte command line


def pack(record: CallRecord) -> str:
    values = []
    for name in FIELDS:
        value = getattr(record, name)
        if name == "started_at":
            value = "%.3f" % value.timestamp()
        if name == "parent_name":
            value = (value or "")[:MAX_NAME]
        values.append((value or "").translate(_ESCAPE))
    return "|".join([VERSION] + values)


def unpack(text: str):
    """The CallRecord packed by ``pack``, or None when absent or not ours."""
    parts = (text or "").split("|")
    if parts[0] != VERSION or len(parts) != len(FIELDS) + 1:
        return None
    data = {name: unquote(value) or None for name, value in zip(FIELDS, parts[1:])}
    try:
        data["started_at"] = datetime.fromtimestamp(float(data["started_at"]), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):    # out of time_t's range: not ours
        return None
    for name in ("link_table", "link_column", "lookup_status"):
        data[name] = data[name] or ""
    if not data["call_id"] or data["direction"] not in ("Inbound", "Outbound"):
        return None
    return CallRecord(**data)


def clean(value):
    """AGI uses the literal ``unknown`` for an unset caller ID; treat it as empty."""
    value = (value or "").strip()
    return "" if value in PLACEHOLDERS else value


def extension_from_peer(peer):
    """``101@phones/n``, ``PJSIP/101``, ``Local/101@from-queue/n``, ``PJSIP/101-0000001a`` -> ``101``."""
    text = (peer or "").strip()
    if not text:
        return None
    text = _TECH.sub("", text.split("&")[0])
    text = text.split("@")[0].split("/")[0]
    text = re.sub(r"-[0-9a-f]{8}(;\d)?$", "", text)
    return text if text.isdigit() else None


def to_int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
