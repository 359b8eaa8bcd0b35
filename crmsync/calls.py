"""SuiteCRM Calls written with plain SQL: the rows that put a call in History.

One Asterisk call = one ``calls`` row, its link row (``calls_contacts`` /
``calls_leads``; Accounts only use parent_type/parent_id), ``calls_users`` rows
with accept_status 'accept', and crmagi's own ``crmagi_calls`` row (see
docs/suitecrm.md sections 3-5).

The same op may arrive twice (AGI retry, a spool replay of a write that timed
out but did complete) or out of order (finish before start), so:
- ``start`` inserts everything or, when the call id exists, changes nothing;
- ``finish`` inserts the call first when it is missing, and applies the end once:
  the first finish wins, a second one is a no-op (so date_modified stays put too).
"""
import dataclasses
import uuid
from datetime import datetime, timezone

from sqlalchemy import (CHAR, Column, DateTime, Integer, MetaData, String, Table, and_,
                        inspect, insert, select, update)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from . import outcome as rules
from .db import CALL_COLUMNS, CALL_TABLES, CrmUnavailable, Schema, SchemaError
from .models import CallRecord

# Fixed for ever: call ids derive from it, so changing it would fork every call in flight.
_NAMESPACE = uuid.UUID("30398352-e430-4a67-8fe8-a4332115f8a3")

_MYSQL_DUPLICATE_KEY = 1062
_MYSQL_DEADLOCK = 1213

_META = MetaData()
# crmagi's own table, so it is declared here; SuiteCRM's tables are only ever reflected.
# No charset is forced: the database default (utf8mb3 on SuiteCRM installs) applies,
# and every indexed column is short enough for either utf8mb3 or utf8mb4.
CRMAGI_CALLS = Table(
    "crmagi_calls", _META,
    Column("call_id", CHAR(36), primary_key=True),
    Column("linkedid", String(64), index=True),
    Column("uniqueid", String(64)),
    Column("direction", String(16)),
    Column("number", String(100)),
    Column("did", String(100)),
    Column("extension", String(64)),
    Column("parent_type", String(100)),
    Column("parent_id", String(36)),
    Column("parent_name", String(255)),
    Column("link_table", String(64)),
    Column("link_column", String(64)),
    Column("lookup_status", String(16)),
    Column("status", String(16)),
    Column("outcome", String(16)),
    Column("dial_status", String(32)),
    Column("talk_seconds", Integer),
    Column("ring_seconds", Integer),
    Column("answered_extension", String(64)),
    Column("answered_user_id", String(36)),
    Column("recording", String(512)),
    Column("hangup_cause", String(64)),
    Column("started_at", DateTime),
    Column("ended_at", DateTime),
    Column("updated_at", DateTime),
    # Filled from the AMI call model (issue #4); added to older tables by ensure_tables.
    Column("transfer_extension", String(64)),
    Column("transfer_user_id", String(36)),
    Column("transfers", Integer),
    Column("campaign", String(36)),
    Column("lead_source", String(100)),
    Column("did_group", String(100)),
    mysql_engine="InnoDB",
)

_END_FIELDS = ("status", "outcome", "dial_status", "talk_seconds", "ring_seconds",
               "answered_extension", "answered_user_id", "recording", "hangup_cause")


def _utc(value):
    """Naive UTC without microseconds, as SuiteCRM stores it; naive input is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _now():
    return _utc(datetime.now(timezone.utc))


def _mysql_errno(exc):
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args else None


def _is_duplicate(exc):
    if _mysql_errno(exc) == _MYSQL_DUPLICATE_KEY:
        return True
    return "UNIQUE constraint failed" in str(getattr(exc, "orig", ""))     # sqlite


def _is_deadlock(exc):
    return _mysql_errno(exc) == _MYSQL_DEADLOCK


def _fit(table, values):
    """Make strings acceptable to a strict-mode utf8mb3 column: BMP only, cut to length."""
    out = {}
    for key, value in values.items():
        if key not in table.c:
            raise SchemaError("%s.%s: column not found" % (table.name, key))
        if isinstance(value, str):
            value = rules.utf8mb3_safe(value)
            length = getattr(table.c[key].type, "length", None)
            if length and len(value) > length:
                value = value[:length]
        out[key] = value
    return out


class CallStore:
    """Idempotent writes of CallRecords into SuiteCRM; errors surface as CrmUnavailable."""

    def __init__(self, engine, system_user="1"):
        self.engine = engine
        self.system_user = system_user
        self._schema = Schema(engine, CALL_TABLES, {t: CALL_COLUMNS[t] for t in CALL_TABLES})
        self._links = {}
        self._ready = False

    @staticmethod
    def call_id_for(system_name, linkedid):
        """The Call id of one Asterisk call: the same on every crmagi run and node."""
        return str(uuid.uuid5(_NAMESPACE, "%s/%s" % (system_name, linkedid)))

    # -- public API ---------------------------------------------------------------

    def ensure_tables(self):
        """Create crmagi_calls when missing and check SuiteCRM's call tables."""
        try:
            try:
                _META.create_all(self.engine, tables=[CRMAGI_CALLS], checkfirst=True)
            except SQLAlchemyError:
                # Another crmagi may have created it between the check and the CREATE.
                if not inspect(self.engine).has_table(CRMAGI_CALLS.name):
                    raise
            self._add_missing_columns()
            self._schema.check()
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        self._ready = True

    def _add_missing_columns(self):
        """crmagi_calls gained columns after its first release: add them to an older table."""
        present = {col["name"] for col in inspect(self.engine).get_columns(CRMAGI_CALLS.name)}
        missing = [col for col in CRMAGI_CALLS.c if col.name not in present]
        with self.engine.begin() as conn:
            for col in missing:
                kind = col.type.compile(dialect=self.engine.dialect)
                conn.exec_driver_sql("ALTER TABLE crmagi_calls ADD COLUMN %s %s" % (col.name, kind))

    def start(self, rec):
        """Insert the call; False (and nothing changed) when the call id already exists."""
        return self._guarded(self._start, rec)

    def finish(self, rec):
        """Apply the end of the call (inserting it first if needed); False if already finished."""
        return self._guarded(self._finish, rec)

    def ping(self):
        """One round trip; raises CrmUnavailable when the database does not answer (the
        writer asks this to tell an unreachable CRM from an op that cannot apply)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc

    def get(self, call_id):
        """The CallRecord as stored; assigned_user_id is the CRM's current owner."""
        return self._guarded(self._get, call_id)

    # -- transactions -------------------------------------------------------------

    def _guarded(self, operation, arg):
        try:
            if not self._ready:
                self.ensure_tables()
            return operation(arg)
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc

    def _get(self, call_id):
        calls = self.table("calls")
        query = (select(CRMAGI_CALLS, calls.c.assigned_user_id)
                 .select_from(CRMAGI_CALLS.outerjoin(calls, calls.c.id == CRMAGI_CALLS.c.call_id))
                 .where(CRMAGI_CALLS.c.call_id == call_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(row)

    def _start(self, rec):
        try:
            with self.engine.begin() as conn:
                self._insert(conn, rec, _now())
        except IntegrityError as exc:
            # A concurrent or earlier start (or finish) inserted the same call id.
            if _is_duplicate(exc):
                return False
            raise
        return True

    def _finish(self, rec):
        # Retried: a start racing us may insert the call between our check and our insert
        # (duplicate key), and two finishes of a missing call both hold the gap lock of
        # their FOR UPDATE and deadlock on insert.  The next try finds the row.
        for attempt in range(1, 4):
            try:
                with self.engine.begin() as conn:
                    return self._finish_in(conn, rec)
            except (IntegrityError, OperationalError) as exc:
                if attempt == 3 or not (_is_duplicate(exc) or _is_deadlock(exc)):
                    raise
        return False  # pragma: no cover

    def _finish_in(self, conn, rec):
        now = _now()
        # FOR UPDATE serialises concurrent finishes of one call on MySQL.
        row = conn.execute(select(CRMAGI_CALLS.c.ended_at, CRMAGI_CALLS.c.transfer_user_id,
                                  CRMAGI_CALLS.c.answered_extension)
                           .where(CRMAGI_CALLS.c.call_id == rec.call_id)
                           .with_for_update()).first()
        if row is None:
            self._insert(conn, rec, now)
        elif row.ended_at is not None:
            return False
        status, result = rules.outcome(rec.direction, rec.dial_status, rec.talk_seconds)
        done = dataclasses.replace(rec, status=status, outcome=result)
        ended = _utc(rec.ended_at) or now
        hours, minutes = rules.duration_parts(rec.talk_seconds)
        calls = self.table("calls")
        owner = conn.execute(select(calls.c.assigned_user_id)
                             .where(calls.c.id == rec.call_id)).scalar()
        values = {"status": status, "duration_hours": hours, "duration_minutes": minutes,
                  "date_end": ended, "name": rules.subject(done),
                  "description": rules.description(done),
                  "date_modified": now, "modified_user_id": self.system_user}
        transferred = row is not None and row.transfer_user_id
        if rec.answered_user_id and rec.answered_user_id != owner and not transferred:
            # The agent who took the call owns it ("My Calls"); the first owner keeps a link.
            values["assigned_user_id"] = rec.answered_user_id
        conn.execute(update(calls).where(calls.c.id == rec.call_id).values(**_fit(calls, values)))
        if rec.answered_user_id:
            self.link_user(conn, rec.call_id, rec.answered_user_id, now)
        end = {key: getattr(done, key) for key in _END_FIELDS}
        if row is not None and row.answered_extension:
            # The AMI model saw who answered first; the hangup's DIALEDPEERNUMBER is the last
            # Dial (after a blind transfer: the transfer target), so it does not overwrite it.
            end.pop("answered_extension")
            end.pop("answered_user_id")
        end.update(ended_at=ended, updated_at=now)
        conn.execute(update(CRMAGI_CALLS).where(CRMAGI_CALLS.c.call_id == rec.call_id)
                     .values(**_fit(CRMAGI_CALLS, end)))
        return True

    def _insert(self, conn, rec, now):
        """All rows of a new call.  crmagi_calls goes first: its primary key is the
        duplicate check, before any SuiteCRM table is touched."""
        started = _utc(rec.started_at) or now
        parent = rec.parent_module if rec.parent_module and rec.parent_id else None
        planned = dataclasses.replace(rec, status="Planned", outcome=None)
        conn.execute(insert(CRMAGI_CALLS).values(**_fit(CRMAGI_CALLS, {
            "call_id": rec.call_id, "linkedid": rec.linkedid, "uniqueid": rec.uniqueid,
            "direction": rules.normalize_direction(rec.direction), "number": rec.number,
            "did": rec.did, "extension": rec.extension,
            "parent_type": parent, "parent_id": rec.parent_id if parent else None,
            "parent_name": rec.parent_name, "link_table": rec.link_table or None,
            "link_column": rec.link_column or None, "lookup_status": rec.lookup_status,
            "status": "Planned", "started_at": started, "updated_at": now})))
        calls = self.table("calls")
        conn.execute(insert(calls).values(**_fit(calls, {
            "id": rec.call_id, "name": rules.subject(planned),
            "description": rules.description(planned),
            "date_entered": now, "date_modified": now,
            "created_by": self.system_user, "modified_user_id": self.system_user,
            "assigned_user_id": rec.assigned_user_id, "deleted": 0,
            "duration_hours": 0, "duration_minutes": 0,
            # SuiteCRM's bean keeps date_end = date_start + duration; duration is 0 here.
            "date_start": started, "date_end": started,
            "parent_type": parent, "parent_id": rec.parent_id if parent else None,
            "status": "Planned", "direction": rules.normalize_direction(rec.direction)})))
        if parent and rec.link_table:
            link = self.table(rec.link_table)
            conn.execute(insert(link).values(**_fit(link, {
                "id": str(uuid.uuid4()), "call_id": rec.call_id, rec.link_column: rec.parent_id,
                "required": "1", "accept_status": "none", "date_modified": now, "deleted": 0})))
        if rec.assigned_user_id:
            self.link_user(conn, rec.call_id, rec.assigned_user_id, now)

    def link_user(self, conn, call_id, user_id, now):
        """calls_users (accept) for the user, unless a live link exists already."""
        users = self.table("calls_users")
        exists = conn.execute(select(users.c.id).where(and_(
            users.c.call_id == call_id, users.c.user_id == user_id, users.c.deleted == 0))).first()
        if exists is None:
            conn.execute(insert(users).values(**_fit(users, {
                "id": str(uuid.uuid4()), "call_id": call_id, "user_id": user_id,
                "required": "1", "accept_status": "accept", "date_modified": now, "deleted": 0})))

    def table(self, name):
        if name in CALL_TABLES:
            return self._schema.table(name)
        # Link tables come from configuration; each is reflected on first use.
        schema = self._links.get(name)
        if schema is None:
            schema = self._links[name] = Schema(self.engine, (name,))
        return schema.table(name)


def _unavailable(exc):
    detail = getattr(exc, "orig", None) or exc
    return CrmUnavailable("CRM database: %s: %s" % (type(detail).__name__, detail))


def _aware(value):
    return None if value is None else value.replace(tzinfo=timezone.utc)


def _record(row):
    return CallRecord(
        call_id=row["call_id"], linkedid=row["linkedid"], uniqueid=row["uniqueid"],
        direction=row["direction"], number=row["number"], started_at=_aware(row["started_at"]),
        did=row["did"], extension=row["extension"], parent_module=row["parent_type"],
        parent_id=row["parent_id"], parent_name=row["parent_name"],
        link_table=row["link_table"] or "", link_column=row["link_column"] or "",
        assigned_user_id=row["assigned_user_id"], lookup_status=row["lookup_status"],
        ended_at=_aware(row["ended_at"]), status=row["status"], outcome=row["outcome"],
        dial_status=row["dial_status"], talk_seconds=row["talk_seconds"],
        ring_seconds=row["ring_seconds"], answered_extension=row["answered_extension"],
        answered_user_id=row["answered_user_id"], recording=row["recording"],
        hangup_cause=row["hangup_cause"])
