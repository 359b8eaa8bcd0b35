"""PURE parser of Asterisk's ``cdr_csv`` Master.csv: bytes in, CDR rows out.

cdr_csv writes, per channel segment, 16 fixed columns, then ``uniqueid`` and
``userfield`` when ``loguniqueid`` / ``loguserfield`` are on (both are in the
shipped cdr.conf), then ``peeraccount``, ``linkedid`` and ``sequence`` with
``newcdrcolumns``.  Times are UTC with ``usegmtime = yes``, else the Asterisk
box's local time: the caller passes that zone.  A line that fits none of these
shapes is reported, never guessed at.
"""
import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import List, Optional, Tuple

FIXED = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
         "start", "answer", "end", "duration", "billsec", "disposition", "amaflags")
NEW_COLUMNS = ("peeraccount", "linkedid", "sequence")
_UNIQUEID = re.compile(r"^[^\s,]*\d+\.\d+$")      # <epoch>.<counter>, maybe behind a system name


@dataclass(frozen=True)
class CdrRow:
    """One CDR record (one channel segment) with typed times and counts."""
    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime                    # UTC-aware
    answer: Optional[datetime]
    end: datetime
    duration: int
    billsec: int
    disposition: str                   # ANSWERED | NO ANSWER | BUSY | FAILED | CONGESTION
    uniqueid: str
    linkedid: str = ""                 # only with newcdrcolumns (or a CDR table that has it)
    userfield: str = ""

    @property
    def key(self):
        """The call this row belongs to: its linkedid, else its own uniqueid."""
        return self.linkedid or self.uniqueid


class BadRow(ValueError):
    """A line that is not a cdr_csv record crmagi can read."""


def parse(data: bytes, zone: tzinfo = timezone.utc) -> Tuple[List[CdrRow], List[str]]:
    """(rows, problems): every readable record, and one message per line that is not."""
    rows, problems = [], []
    text = data.decode("utf-8", errors="replace")
    for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not fields:
            continue
        try:
            rows.append(row_from(_named(fields), zone))
        except BadRow as exc:
            problems.append("line %d: %s" % (number, exc))
    return rows, problems


def _named(fields):
    """Column name -> value, by the record's width (see the module docstring)."""
    extra = fields[len(FIXED):]
    width = len(extra)
    if width >= 3 and _has_new_columns(extra[-3:]):
        tail, extra = dict(zip(NEW_COLUMNS, extra[-3:])), extra[:-3]
        width -= 3
    else:
        tail = {}
    if len(fields) < len(FIXED) or width > 2:
        raise BadRow("%d columns: not a cdr_csv record" % len(fields))
    named = dict(zip(FIXED, fields))
    if width == 2:
        named.update(uniqueid=extra[0], userfield=extra[1])
    elif width == 1 and _UNIQUEID.match(extra[0]):
        named["uniqueid"] = extra[0]
    named.update(tail)
    if not named.get("uniqueid") and not named.get("linkedid"):
        raise BadRow("no uniqueid nor linkedid (cdr.conf [csv] loguniqueid = yes is needed)")
    return named


def _has_new_columns(last3):
    """peeraccount, linkedid, sequence: a linkedid that looks like one and a numeric sequence."""
    return bool(_UNIQUEID.match(last3[1])) and last3[2].isdigit()


def row_from(named, zone: tzinfo = timezone.utc) -> CdrRow:
    """A CdrRow from column name -> text (a CSV line, or a row of a CDR table read as text)."""
    start, end = _time(named, "start", zone), _time(named, "end", zone)
    if start is None or end is None:
        raise BadRow("no start or end time")
    return CdrRow(src=named["src"], dst=named["dst"], dcontext=named["dcontext"], clid=named["clid"],
                  channel=named["channel"], dstchannel=named["dstchannel"], lastapp=named["lastapp"],
                  lastdata=named["lastdata"], start=start, answer=_time(named, "answer", zone), end=end,
                  duration=_count(named, "duration"), billsec=_count(named, "billsec"),
                  disposition=named["disposition"].strip().upper(), uniqueid=(named.get("uniqueid") or "").strip(),
                  linkedid=(named.get("linkedid") or "").strip(), userfield=named.get("userfield") or "")


def _time(named, column, zone):
    text = (named.get(column) or "").strip()
    if not text:
        return None
    try:
        value = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise BadRow("%s %r is not a time" % (column, text)) from None
    return value.replace(tzinfo=zone).astimezone(timezone.utc)


def _count(named, column):
    text = (named.get(column) or "").strip()
    if not text.isdigit():
        raise BadRow("%s %r is not a number of seconds" % (column, text))
    return int(text)
