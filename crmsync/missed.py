"""Missed inbound calls: SuiteCRM's notification bell and crmagi's missed-calls list.

An inbound call nobody answered opens (or counts one more attempt on) an entry per
number and user in ``crmagi_missed``: for the record's responsible user, else for the
users of ``[webpush] fallback_extensions``.  Each entry has one SuiteCRM alert (the
``alerts`` table of SuiteCRM 7, the bell SuiteCRM polls through
``index.php?module=Alerts&action=get``), so it shows even without crmagi's socket.
A later call with the same number that connects, inbound or outbound, closes every
open entry of that number, for everyone, and marks their alerts read (the bell lists
only ``is_read != 1``).  SuiteCRM escapes ``" ' < >`` of what it reads but not ``&``, and its
beans store text HTML-encoded: names and descriptions are written encoded (``_stored``).

The statements join the finish of the call in ONE transaction (crmsync/calls.py):
the finish applies once (the first finish wins), so a spool replay or a second box
never counts an attempt twice.  The table lives in the CRM's database, so every box
sees the same entries.  SugarCRM CE 6.5 has no ``alerts`` table: the list then works
without the bell.
"""
import html
import logging
import uuid
from datetime import timezone
from typing import Callable, Iterable, List, NamedTuple, Optional
from urllib.parse import quote

from sqlalchemy import CHAR, Column, DateTime, Index, Integer, MetaData, String, Table, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from . import dialect as dialects
from . import outcome as rules
from . import phone
from .calls import _fit, _unavailable, _utc
from .db import Schema
from .models import MissedEntry

log = logging.getLogger("crmsync.missed")

_META = MetaData()
# crmagi's own table (SuiteCRM's ``alerts`` is only ever reflected).  ``open`` is 1 while
# the entry is open and NULL once closed: the unique key then allows one open entry per
# number and user, and any number of closed ones.
MISSED = Table(
    "crmagi_missed", _META,
    Column("id", CHAR(36), primary_key=True),
    Column("number_key", String(32), nullable=False),
    Column("number", String(100)),
    Column("user_id", CHAR(36), nullable=False),
    Column("parent_type", String(100)),
    Column("parent_id", String(36)),
    Column("parent_name", String(255)),
    Column("caller_name", String(100)),
    Column("attempts", Integer, nullable=False),
    Column("first_at", DateTime),
    Column("last_at", DateTime),
    Column("last_call_id", CHAR(36)),
    Column("alert_id", CHAR(36)),
    Column("open", Integer),
    Column("closed_at", DateTime),
    Column("closed_by", CHAR(36)),
    # SQL Server's unique indexes count NULLs as equal: there the index holds open entries only.
    Index("crmagi_missed_open", "number_key", "user_id", "open", unique=True,
          mssql_where=text("[open] IS NOT NULL")),
    Index("crmagi_missed_user", "user_id", "open"),
    mysql_engine="InnoDB",
)
ALERT_COLUMNS = ("id", "name", "date_entered", "date_modified", "modified_user_id", "created_by",
                 "description", "deleted", "assigned_user_id", "is_read", "target_module", "type",
                 "url_redirect", "reminder_id")

# The alert's texts are written once, in the site's default language ([crm] default_language,
# as Call subjects; ``_`` below is its gettext), with its date format and zone.  SuiteCRM stores
# text HTML-encoded and its bell prints it as stored, so every value is encoded before it is
# written (_stored).
LIST_LIMIT = 50          # entries shown per user, newest first



class _Sql:
    """The statements of the finish's part, in the engine's dialect (crmsync/dialect/)."""

    def __init__(self, dialect):
        self.q = q = dialect.quote
        names = {name: q(name) for name in ("id", "alert_id", "crmagi_missed", "number_key", "open", "last_at",
                                            "user_id", "attempts", "first_at", "alerts")}
        locked = dict(names, hint=dialect.lock_hint, suffix=dialect.lock_suffix)
        self.open_rows_before = ("SELECT " + dialect.row_columns("{id}, {alert_id}") + " FROM {crmagi_missed}{hint} "
                                 "WHERE {number_key} = %s AND {open} = 1 AND {last_at} <= %s{suffix}").format(**locked)
        self.open_rows = ("SELECT " + dialect.row_columns("{id}, {user_id}, {attempts}, {alert_id}, {first_at}") +
                          " FROM {crmagi_missed}{hint} WHERE {number_key} = %s AND {open} = 1{suffix}").format(**locked)
        self.rows_of = dialect.rows_of
        self.first = "INSERT INTO %s (%s) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, 1, %%s, %%s, %%s, %%s, 1)" % (
            q("crmagi_missed"), ", ".join(map(q, (
                "id", "number_key", "number", "user_id", "parent_type", "parent_id", "parent_name", "caller_name",
                "attempts", "first_at", "last_at", "last_call_id", "alert_id", "open"))))
        self.alert = "INSERT INTO %s (%s) VALUES (%s)" % (
            q("alerts"), ", ".join(map(q, ALERT_COLUMNS)), ", ".join(["%s"] * len(ALERT_COLUMNS)))
        self.again = ("UPDATE {m} SET {attempts} = {attempts} + 1, {last_at} = %s, {last_call_id} = %s, "
                      "{parent_type} = COALESCE(%s, {parent_type}), {parent_id} = COALESCE(%s, {parent_id}), "
                      "{parent_name} = COALESCE(%s, {parent_name}) WHERE {id} = %s").format(
                          m=q("crmagi_missed"), **{n: q(n) for n in ("attempts", "last_at", "last_call_id",
                                                                      "parent_type", "parent_id", "parent_name",
                                                                      "id")})

    def alert_update(self, columns):
        return "UPDATE %s SET %s WHERE %s = %%s" % (self.q("alerts"), ", ".join("%s = %%s" % self.q(k)
                                                                                for k in columns), self.q("id"))

    def close(self, count):
        return "UPDATE %s SET %s = NULL, %s = %%s, %s = %%s WHERE %s IN (%s)" % (
            self.q("crmagi_missed"), self.q("open"), self.q("closed_at"), self.q("closed_by"), self.q("id"),
            ", ".join(["%s"] * count))

    def read_alerts(self, count):
        return "UPDATE %s SET %s = 1, %s = %%s WHERE %s IN (%s)" % (
            self.q("alerts"), self.q("is_read"), self.q("date_modified"), self.q("id"), ", ".join(["%s"] * count))


def number_key(number, region) -> Optional[str]:
    """The number as entries compare it: E.164 when valid, else its digits.  None for a
    withheld caller or an extension (nothing to call back)."""
    if phone.classify(number, 0) != "number":
        return None
    key = phone.parse(number, region)
    if key is None:
        return None
    return (key.e164 or key.digits)[:32]


def _stored(text):
    """HTML-encoded as SuiteCRM's beans store text (htmlspecialchars, ENT_QUOTES)."""
    return html.escape(text or "", quote=True).replace("&#x27;", "&#039;")


def _utc_text(when):
    return when.strftime("%Y-%m-%d %H:%M UTC")


def alert_name(number, name, _=rules._same):
    number = rules._one_line(number)
    if name:
        return _("Missed call: %(name)s (%(number)s)") % {"name": rules._one_line(name), "number": number}
    return _("Missed call: %s") % number


def alert_description(attempts, last, _=rules._same, when=_utc_text):
    return _("Attempts: %(attempts)s. Last: %(last)s.") % {"attempts": attempts, "last": when(last)}


def alert_url(rec):
    """Where the bell's link goes: the caller's record, else the missed Call.  Stored as is (not
    HTML-encoded: SuiteCRM redirects to it verbatim), every part percent-encoded."""
    known = rec.parent_module and rec.parent_id
    module, record = (rec.parent_module, rec.parent_id) if known else ("Calls", rec.call_id)
    return "index.php?module=%s&action=DetailView&record=%s" % (quote(module, safe=""), quote(record, safe=""))


class _Plan(NamedTuple):
    """The missed-call part of one finish (MissedCalls.plan)."""
    key: str                    # the number as entries compare it (number_key)
    connected: bool             # Held: close the number's entries; else a miss: open or count one
    read: tuple                 # (sql, params) of the entries to lock


class MissedCalls:
    """Statements for the finish of a call, and the open entries of users (for the list)."""

    def __init__(self, engine, region="US", system_user="1", fallback_users: Callable[[], List[str]] = list,
                 gettext=rules._same, when=_utc_text):
        self.engine = engine
        self.region = region
        self.system_user = system_user
        self.fallback_users = fallback_users        # user ids of [webpush] fallback_extensions
        self.gettext, self.when = gettext, when     # the site's language, and its date format and zone
        self._alerts = Schema(engine, ("alerts",), {"alerts": ALERT_COLUMNS})
        self._sql = _Sql(dialects.of(engine))
        self._bell = None

    def ensure_table(self):
        """Create crmagi_missed when missing; check ``alerts`` (absent: no bell, said once)."""
        try:
            _META.create_all(self.engine, tables=[MISSED], checkfirst=True)
        except SQLAlchemyError:
            if not inspect(self.engine).has_table(MISSED.name):
                raise
        if self._alerts.has("alerts"):
            self._alerts.check()
            self._bell = True
        else:
            self._bell = False
            log.warning("the CRM database has no alerts table (SugarCRM CE 6.5, the demo CRM): missed calls go to "
                        "crmagi's list only, not to the bell")

    # -- the finish of a call ------------------------------------------------------

    def plan(self, rec, now):
        """What the finish of ``rec`` has to do with the missed-call entries, or None: the
        number's key, whether the call connected, and the locking read of the entries as
        (sql, params).  The read does not depend on the call's row, so the finish sends it
        with its own read (one round trip)."""
        key = number_key(rec.number, self.region)
        if key is None:
            return None
        status, result = rules.outcome(rec.direction, rec.dial_status, rec.talk_seconds)
        if status == rules.HELD:
            return _Plan(key, True, (self._sql.open_rows_before, (key, _utc(rec.ended_at) or now)))
        if result == "missed":
            return _Plan(key, False, (self._sql.open_rows, (key,)))
        return None

    def statements(self, plan, rec, owner, now, rows):
        """What the finish of ``rec`` changes, from its ``plan`` and the ``rows`` of the plan's
        read (locked in the finish's transaction)."""
        rows = self._sql.rows_of(rows)
        if plan.connected:
            return self._close(rows, rec, now)
        users = [owner] if owner else [u for u in self.fallback_users() if u]
        by_user = {row[1]: row for row in rows}
        out = []
        for user_id in dict.fromkeys(users):
            row = by_user.get(user_id)
            out += self._again(row, rec, now) if row else self._first(plan.key, user_id, rec, now)
        return out

    def _first(self, key, user_id, rec, now):
        when = _utc(rec.started_at) or now
        alert_id = str(uuid.uuid4()) if self._bell else None
        out = [(self._sql.first,
                tuple(_fit(MISSED, {"id": str(uuid.uuid4()), "number_key": key, "number": rec.number,
                                    "user_id": user_id, "parent_type": rec.parent_module,
                                    "parent_id": rec.parent_id, "parent_name": rec.parent_name,
                                    "caller_name": rec.caller_name, "first_at": when, "last_at": when,
                                    "last_call_id": rec.call_id, "alert_id": alert_id}).values()))]
        if alert_id:
            alerts = self._alerts.table("alerts")
            out.append((self._sql.alert,
                tuple(_fit(alerts, self._alert(alert_id, user_id, rec, 1, when, now)).values())))
        return out

    def _alert(self, alert_id, user_id, rec, attempts, when, now):
        name = alert_name(rec.number, rec.parent_name or rec.caller_name, self.gettext)
        return {"id": alert_id, "name": _stored(name),
                "date_entered": now, "date_modified": now, "modified_user_id": self.system_user,
                "created_by": self.system_user, "description": _stored(
                    alert_description(attempts, when, self.gettext, self.when)),
                "deleted": 0, "assigned_user_id": user_id, "is_read": 0, "target_module": "Calls",
                "type": "info", "url_redirect": alert_url(rec), "reminder_id": None}

    def _again(self, row, rec, now):
        entry_id, user_id, attempts, alert_id, _ = row
        when = _utc(rec.started_at) or now
        attempts += 1
        out = [(self._sql.again,
                (when, rec.call_id, rec.parent_module, rec.parent_id,
                 _fit(MISSED, {"parent_name": rec.parent_name})["parent_name"], entry_id))]
        if alert_id and self._bell:
            alert = self._alert(alert_id, user_id, rec, attempts, when, now)
            # Unread again: the user dismissed the bell, but the caller kept trying.
            values = _fit(self._alerts.table("alerts"), {k: alert[k] for k in (
                "name", "description", "date_modified", "is_read", "url_redirect")})
            out.append((self._sql.alert_update(values), tuple(values.values()) + (alert_id,)))
        return out

    def _close(self, rows, rec, now):
        """Every open entry of the number, for every user, and their alerts; only entries
        whose last attempt came before this call ended (a miss during it stays open).
        Read first, then written by primary key: an UPDATE of ``alerts`` through a subquery
        scans the whole table on MariaDB (a dependent subquery), on every connected call."""
        if not rows:
            return []
        out = [(self._sql.close(len(rows)), (now, rec.call_id) + tuple(row[0] for row in rows))]
        alert_ids = tuple(row[1] for row in rows if row[1])
        if alert_ids and self._bell:
            out.append((self._sql.read_alerts(len(alert_ids)), (now,) + alert_ids))
        return out

    # -- the list ------------------------------------------------------------------

    def open_for(self, user_ids: Iterable[str]) -> dict:
        """user id -> that user's open entries, newest first (at most LIST_LIMIT each)."""
        wanted = [u for u in dict.fromkeys(user_ids) if u]
        found = {user_id: [] for user_id in wanted}
        if not wanted:
            return found
        query = (select(MISSED).where(MISSED.c.user_id.in_(wanted), MISSED.c.open == 1)
                 .order_by(MISSED.c.last_at.desc()))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        for row in rows:
            entries = found[row["user_id"]]
            if len(entries) < LIST_LIMIT:
                entries.append(_entry(row))
        return found


def _aware(value):
    return None if value is None else value.replace(tzinfo=timezone.utc)


def _entry(row):
    return MissedEntry(entry_id=row["id"], number=row["number"] or "", attempts=row["attempts"],
                       first_at=_aware(row["first_at"]), last_at=_aware(row["last_at"]),
                       module=row["parent_type"] or "", record_id=row["parent_id"] or "",
                       name=row["parent_name"] or "", caller_name=row["caller_name"] or "",
                       call_id=row["last_call_id"] or "")
