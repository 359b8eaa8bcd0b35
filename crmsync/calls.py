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
import random
import uuid
from datetime import datetime, timezone

import gevent
from sqlalchemy import CHAR, Column, DateTime, Integer, MetaData, String, Table, func, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from . import dialect as dialects
from . import outcome as rules
from . import groupcommit, sqlbatch
from .db import CALL_COLUMNS, CALL_TABLES, CrmUnavailable, Schema, SchemaError
from .models import CallRecord

# Fixed for ever: call ids derive from it, so changing it would fork every call in flight.
_NAMESPACE = uuid.UUID("30398352-e430-4a67-8fe8-a4332115f8a3")

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
    # 1: written from Asterisk's CDR by `crmagi backfill` (crmagi was down for the whole call).
    Column("backfilled", Integer),
    mysql_engine="InnoDB",
)

# A finish that found no row (see CallStore._finish).
_MISSING = object()
_FINISH_ATTEMPTS = 5

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


def _fit(table, values):
    """Make strings acceptable to a strict-mode utf8mb3 column: BMP only, cut to length."""
    lengths = _lengths(table)
    out = {}
    for key, value in values.items():
        if key not in lengths:
            raise SchemaError("%s.%s: column not found" % (table.name, key))
        if isinstance(value, str):
            value = rules.utf8mb3_safe(value)
            length = lengths[key]
            if length and len(value) > length:
                value = value[:length]
        out[key] = value
    return out


_LENGTHS = {}


def _lengths(table):
    """Column name -> declared string length (None: not a string), once per table object."""
    found = _LENGTHS.get(id(table))
    if found is None or found[0] is not table:
        found = _LENGTHS[id(table)] = (table, {c.name: getattr(c.type, "length", None) for c in table.c})
    return found[1]


def _driver_errors(engine):
    """The DBAPI's error classes, which the hot path (crmsync/sqlbatch.py) sees unwrapped."""
    dbapi = engine.dialect.dbapi
    return (dbapi.Error,) if dbapi is not None else ()


class CallStore:
    """Idempotent writes of CallRecords into SuiteCRM; errors surface as CrmUnavailable."""

    def __init__(self, engine, system_user="1", missed=None, gettext=None, write_lanes=2, write_wait=5.0):
        self.engine = engine
        self.system_user = system_user
        self.dialect = dialects.of(engine)
        # Calls' writes share transactions when they queue: on MariaDB/MySQL only, the one
        # database it was measured on (SQLite has one writer; SQL Server's batches untried).
        self.group = groupcommit.GroupCommit(engine, write_lanes if self.dialect.name == "mysql" else 0, write_wait)
        self._statements = _Statements(self.dialect)
        # crmsync/missed.py MissedCalls: its statements join each finish's transaction.
        self.missed = missed
        self.gettext = gettext or (lambda text: text)    # the site's default language, for subjects
        self._schema = Schema(engine, CALL_TABLES, {t: CALL_COLUMNS[t] for t in CALL_TABLES})
        self._links = {}
        self._ready = False
        self._dbapi_errors = _driver_errors(engine)

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
            if self.missed is not None:
                self.missed.ensure_table()
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
                conn.exec_driver_sql(self.dialect.add_column_sql(CRMAGI_CALLS.name, col.name, kind))

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

    def seen(self, ids):
        """Which of ``ids`` (Asterisk linkedids and uniqueids) a logged call holds."""
        return self._guarded(self._seen, sorted(set(ids)))

    def last_started(self):
        """When the latest logged call began (UTC-aware), None before the first one."""
        return self._guarded(self._last_started, None)

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
        except self._dbapi_errors as exc:
            raise _unavailable(exc) from exc

    def _get(self, call_id):
        calls = self.table("calls")
        query = (select(CRMAGI_CALLS, calls.c.assigned_user_id)
                 .select_from(CRMAGI_CALLS.outerjoin(calls, calls.c.id == CRMAGI_CALLS.c.call_id))
                 .where(CRMAGI_CALLS.c.call_id == call_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _record(row)

    def _seen(self, ids):
        found = set()
        with self.engine.connect() as conn:
            for at in range(0, len(ids), 500):
                chunk = ids[at:at + 500]
                query = select(CRMAGI_CALLS.c.linkedid, CRMAGI_CALLS.c.uniqueid).where(
                    CRMAGI_CALLS.c.linkedid.in_(chunk) | CRMAGI_CALLS.c.uniqueid.in_(chunk))
                for row in conn.execute(query):
                    found.update(value for value in row if value in chunk)
        return found

    def _last_started(self, _):
        with self.engine.connect() as conn:
            return _aware(conn.execute(select(func.max(CRMAGI_CALLS.c.started_at))).scalar())

    def _start(self, rec):
        """One round trip on MariaDB: every INSERT of the call and the COMMIT in one packet
        (with other calls' writes when they queue, crmsync/groupcommit.py)."""
        try:
            return self.group.run(groupcommit.Op(
                (rec.call_id,), (), lambda sets: (self.insert_statements(rec, _now()), True)))
        except self._dbapi_errors as exc:
            # A concurrent or earlier start (or finish) inserted the same call id.
            if self.dialect.is_duplicate(exc):
                return False
            raise

    def _finish(self, rec):
        # A finish that finds no row (it came before its start: a spool replay, a lost
        # start) inserts the call in a transaction of its own and reads again.  Inserting
        # under its FOR UPDATE instead held the gap lock of the missing key: concurrent
        # finishes of that call all held it and deadlocked on their inserts, over and over
        # (CI, 2026-12-06).  On an existing row FOR UPDATE locks that row only and the
        # finishes queue behind it.  Deadlocks that remain possible (a live update locking
        # the tables in another order) are retried after a short random pause.
        for attempt in range(1, _FINISH_ATTEMPTS + 1):
            try:
                done = self.group.run(self._finish_op(rec))
                if done is not _MISSING:
                    return done
                self._start(rec)
            except self._dbapi_errors as exc:
                if attempt == _FINISH_ATTEMPTS or not self.dialect.is_deadlock(exc):
                    raise
                gevent.sleep(random.uniform(0.005, 0.02) * attempt)
        raise CrmUnavailable("call %s: its row was still missing after %d tries"
                             % (rec.call_id, _FINISH_ATTEMPTS))

    def _finish_op(self, rec):
        """The finish as a groupcommit.Op: the call read (and the missed-call entries of its
        number: the same round trip), then every write and the COMMIT (one more); its result
        _MISSING, having written nothing, when the call has no row."""
        now = _now()
        reads, keys = [(self._statements.finish_read, (rec.call_id,))], (rec.call_id,)
        missed = self.missed.plan(rec, now) if self.missed is not None else None
        if missed is not None:
            reads.append(missed.read)
            keys += ("missed " + missed.key,)      # its entries are read, then written

        def write(found):
            if not found[0]:
                return [], _MISSING
            ended_at, transferred, answered_before, owner = self.dialect.rows_of(found[0])[0]
            if ended_at is not None:
                return [], False                # finished before: the first finish wins
            statements = self._end_statements(rec, now, owner, transferred, answered_before)
            if missed is not None:
                statements += self.missed.statements(missed, rec, owner, now, found[1])
            return statements, True
        return groupcommit.Op(keys, reads, write)

    def _end_statements(self, rec, now, owner, transferred, answered_before):
        status, result = rules.outcome(rec.direction, rec.dial_status, rec.talk_seconds)
        done = dataclasses.replace(rec, status=status, outcome=result)
        ended = _utc(rec.ended_at) or now
        hours, minutes = rules.duration_parts(rec.talk_seconds)
        calls = self.table("calls")
        values = {"status": status, "duration_hours": hours, "duration_minutes": minutes,
                  "date_end": ended, "name": rules.subject(done, self.gettext),
                  "description": rules.description(done),
                  "date_modified": now, "modified_user_id": self.system_user}
        if rec.answered_user_id and rec.answered_user_id != owner and not transferred:
            # The agent who took the call owns it ("My Calls"); the first owner keeps a link.
            values["assigned_user_id"] = rec.answered_user_id
        statements = [self.update("calls", _fit(calls, values), "id", rec.call_id)]
        if rec.answered_user_id:
            statements.append(self.link_user_statement(rec.call_id, rec.answered_user_id, now))
        end = {key: getattr(done, key) for key in _END_FIELDS}
        if answered_before:
            # The AMI model saw who answered first; the hangup's DIALEDPEERNUMBER is the last
            # Dial (after a blind transfer: the transfer target), so it does not overwrite it.
            end.pop("answered_extension")
            end.pop("answered_user_id")
        end.update(ended_at=ended, updated_at=now)
        statements.append(self.update("crmagi_calls", _fit(CRMAGI_CALLS, end), "call_id", rec.call_id))
        return statements

    def insert_statements(self, rec, now):
        """All rows of a new call.  crmagi_calls goes first: its primary key is the
        duplicate check, before any SuiteCRM table is touched."""
        started = _utc(rec.started_at) or now
        parent = rec.parent_module if rec.parent_module and rec.parent_id else None
        planned = dataclasses.replace(rec, status="Planned", outcome=None)
        out = [self.insert("crmagi_calls", _fit(CRMAGI_CALLS, {
            "call_id": rec.call_id, "linkedid": rec.linkedid, "uniqueid": rec.uniqueid,
            "direction": rules.normalize_direction(rec.direction), "number": rec.number,
            "did": rec.did, "extension": rec.extension,
            "parent_type": parent, "parent_id": rec.parent_id if parent else None,
            "parent_name": rec.parent_name, "link_table": rec.link_table or None,
            "link_column": rec.link_column or None, "lookup_status": rec.lookup_status,
            "status": "Planned", "started_at": started, "updated_at": now,
            "backfilled": 1 if rec.backfilled else None}))]
        calls = self.table("calls")
        out.append(self.insert("calls", _fit(calls, {
            "id": rec.call_id, "name": rules.subject(planned, self.gettext),
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
            out.append(self.insert(rec.link_table, _fit(link, {
                "id": str(uuid.uuid4()), "call_id": rec.call_id, rec.link_column: rec.parent_id,
                "required": "1", "accept_status": "none", "date_modified": now, "deleted": 0})))
        if rec.assigned_user_id:
            out.append(self.link_user_statement(rec.call_id, rec.assigned_user_id, now, new_call=True))
        return out

    def insert(self, table, values):
        return sqlbatch.insert(table, values, self.dialect)

    def update(self, table, values, key, key_value):
        return sqlbatch.update(table, values, key, key_value, self.dialect)

    def link_user_statement(self, call_id, user_id, now, new_call=False):
        """The user's calls_users link (accept), unless the call has one already.  ``new_call``:
        among the INSERTs of a new call, which has no links yet (a second start fails on
        crmagi_calls' key first; a live update links a user only once the row exists): a plain
        INSERT, 65-120 us in MariaDB against 165 us for the WHERE NOT EXISTS form."""
        self.table("calls_users")        # checked to exist, as every table written
        link = (str(uuid.uuid4()), call_id, user_id, now)
        if new_call:
            return self._statements.new_link, link
        return self._statements.link_user, link + (call_id, user_id)

    def table(self, name):
        if name in CALL_TABLES:
            return self._schema.table(name)
        # Link tables come from configuration; each is reflected on first use.
        schema = self._links.get(name)
        if schema is None:
            schema = self._links[name] = Schema(self.engine, (name,))
        return schema.table(name)


class _Statements:
    """The fixed statements of the call rows, in the engine's dialect (quoting, row lock)."""

    def __init__(self, dialect):
        q = dialect.quote
        # The call's state and its current owner, locked (FOR UPDATE, or SQL Server's UPDLOCK,
        # serialises concurrent finishes of one call): one round trip.
        self.finish_read = (
            "SELECT " + dialect.row_columns(
                "m.{ended_at}, m.{transfer_user_id}, m.{answered_extension}, c.{assigned_user_id}") + " "
            "FROM {crmagi_calls} m{hint} LEFT JOIN {calls} c ON c.{id} = m.{call_id} "
            "WHERE m.{call_id} = %s{suffix}").format(
                hint=dialect.lock_hint, suffix=dialect.lock_suffix, **_quoted(q, (
                    "ended_at", "transfer_user_id", "answered_extension", "assigned_user_id",
                    "crmagi_calls", "calls", "id", "call_id")))
        users = _quoted(q, ("calls_users", "id", "call_id", "user_id", "required", "accept_status",
                            "date_modified", "deleted"))
        insert = ("INSERT INTO {calls_users} ({id}, {call_id}, {user_id}, {required}, {accept_status}, "
                  "{date_modified}, {deleted}) ")
        # calls_users (accept) for the user of a new call, which has no links yet.
        self.new_link = (insert + "VALUES (%s, %s, %s, '1', 'accept', %s, 0)").format(**users)
        # ... and for any call, unless a live link exists already: one statement.
        self.link_user = (insert + "SELECT %s, %s, %s, '1', 'accept', %s, 0 WHERE NOT EXISTS "
                          "(SELECT 1 FROM {calls_users} WHERE {call_id} = %s AND {user_id} = %s "
                          "AND {deleted} = 0)").format(**users)


def _quoted(quote, names):
    return {name: quote(name) for name in names}


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
