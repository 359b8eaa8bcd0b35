"""SuiteCRM's date and time formats (PHP ``date()`` letters) in the user's time zone (pure).

SuiteCRM offers ``Y-m-d``, ``m/d/Y``, ``d.m.Y`` ... and ``H:i``, ``h:ia``, ``h.i A`` ...
(config.php ``date_formats`` / ``time_formats``); a user picks one of each and a time
zone in their profile.  Dates are stored in UTC (docs/suitecrm.md section 7), so a
display is: UTC -> the user's zone -> the user's letters.  Only the numeric letters
SuiteCRM's formats use are known; a backslash escapes a letter, as in PHP.
"""
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_LETTERS = {
    "d": lambda t: "%02d" % t.day,
    "j": lambda t: str(t.day),
    "m": lambda t: "%02d" % t.month,
    "n": lambda t: str(t.month),
    "Y": lambda t: "%04d" % t.year,
    "y": lambda t: "%02d" % (t.year % 100),
    "H": lambda t: "%02d" % t.hour,
    "G": lambda t: str(t.hour),
    "h": lambda t: "%02d" % (t.hour % 12 or 12),
    "g": lambda t: str(t.hour % 12 or 12),
    "i": lambda t: "%02d" % t.minute,
    "s": lambda t: "%02d" % t.second,
    "a": lambda t: "am" if t.hour < 12 else "pm",
    "A": lambda t: "AM" if t.hour < 12 else "PM",
}


def php_format(when: datetime, letters: str) -> str:
    """``when`` (already in the wanted zone) written with PHP ``date()`` letters."""
    out, escaped = [], False
    for char in letters:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            known = _LETTERS.get(char)
            out.append(known(when) if known else char)
    return "".join(out)


def check_format(letters: str) -> str:
    """``letters`` when every unescaped ASCII letter is one SuiteCRM's formats use, else ValueError."""
    unescaped = re.sub(r"\\.", "", letters)
    unknown = {c for c in unescaped if c.isascii() and c.isalpha()} - set(_LETTERS)
    if not letters.strip() or unknown:
        raise ValueError("%r is not a SuiteCRM date/time format (letters %s, e.g. d.m.Y or H:i)"
                         % (letters, "".join(sorted(_LETTERS))))
    return letters


def zone(name: str):
    """The ZoneInfo of ``name``; UTC for an empty or unknown one (what SuiteCRM does too)."""
    try:
        return ZoneInfo(name) if name else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def display(when: datetime, date_format: str, time_format: str, tz_name: str) -> str:
    """A UTC datetime (naive = UTC) as the user reads it: ``date_format time_format`` in ``tz_name``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    local = when.astimezone(zone(tz_name))
    return php_format(local, date_format) + " " + php_format(local, time_format)
