"""``crmagi_phone_index``: every phone value of the configured modules, keyed for an indexed lookup.

One row per non-empty phone value of a live record (``deleted = 0``) of every
configured module: ``(module, record_id, field)`` is the primary key, and
``digits_rev`` (see crmsync/triggers.py) makes "the caller's last N digits" an
index range read.  ``e164`` and ``national`` (phonenumbers with ``[lookup]
default_region``) are informative: the triggers cannot compute them, so a row
written by a trigger has them NULL with ``parsed = 0`` until the next rebuild.
Matching never depends on them: Directory reads candidates here, then fetches
the records themselves and verifies them with ``phone.match``, so a stale row
can cost a query but never produce a wrong match.

Users are NOT indexed here: there are few of them and Directory keeps them in
an in-memory map (users.id and extension), refreshed every
``users_cache_seconds``.

Readiness (``status``/``is_ready``): the crmagi triggers of every configured
table are installed with the bodies the current configuration generates, and a
rebuild completed while they were installed (``crmagi_phone_index_state``
holds the fingerprint of the triggers it ran under).  Only then may Directory
trust the index.
"""
import logging
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, List, NamedTuple, Optional, Tuple

from sqlalchemy import exc as sa_exc, func, select, text

from . import dialect as dialects
from . import indexsync, phone, triggers
from .db import Schema, SchemaError
from .models import LookupRules
from .triggers import INDEX_TABLE, MAX_ID_LENGTH

log = logging.getLogger(__name__)

STATE_TABLE = "crmagi_phone_index_state"
MAX_CANDIDATES = 1000


class PhoneIndexError(Exception):
    """The phone index cannot be used here (not MariaDB/MySQL/SQL Server, or not installed)."""


class RebuildStats(NamedTuple):
    records: int        # source records read
    written: int        # index rows inserted or updated
    deleted: int        # index rows removed
    seconds: float


class PhoneIndex:
    def __init__(self, engine, rules: LookupRules, batch_size: int = 2000):
        self.engine = engine
        self.rules = rules
        self.batch_size = batch_size
        self.last_rebuild: Optional[RebuildStats] = None
        self._schema = Schema(engine, [spec.table for spec in rules.modules])
        self._wanted = None      # (trigger bodies, fingerprint): they depend on the rules only
        try:
            # The SQL of the index tables and triggers on this database (crmsync/dialect/).
            self.sql = dialects.of(engine).phone_index(engine)
        except ValueError:
            self.sql = None

    @property
    def supported(self):
        return self.sql is not None

    def require_supported(self):
        """PhoneIndexError unless the CRM database is MariaDB, MySQL or SQL Server."""
        if not self.supported:
            raise PhoneIndexError("the phone index needs MariaDB or MySQL; this CRM database is %s "
                                  "(lookups scan the phone columns instead)" % self.engine.dialect.name)

    # -- table and triggers ----------------------------------------------------

    def _tables(self):
        """The configured tables, reflected, with every column the index reads checked."""
        tables, problems = self._schema.tables(), []
        for spec in self.rules.modules:
            table = tables.get(spec.table)
            if table is None:
                problems.append("%s: table not found in the CRM database" % spec.table)
                continue
            problems += ["%s.%s: column not found" % (spec.table, column)
                         for column in ("id", "deleted") + spec.phone_fields if column not in table.c]
            length = getattr(table.c.id.type, "length", None) if "id" in table.c else None
            if length and length > MAX_ID_LENGTH:
                problems.append("%s.id: %d characters, the phone index holds ids up to %d"
                                % (spec.table, length, MAX_ID_LENGTH))
        if problems:
            raise SchemaError("; ".join(problems))
        return tables

    def ensure_table(self):
        """Create crmagi_phone_index and its state table (idempotent)."""
        self.require_supported()
        self._tables()
        with self.engine.begin() as conn:
            self.sql.create_tables(conn, self.rules.modules[0].table, STATE_TABLE)

    def install_triggers(self) -> List[str]:
        """Create or replace the triggers of the configured tables, drop those of other tables.

        Returns what changed (empty when everything was already in place).  Any
        change means edits may have been missed meanwhile: the index stops being
        ready until the next rebuild.
        """
        self.require_supported()
        self.ensure_table()
        wanted = self._generated()[0]
        changes = []
        with self._ddl() as conn:
            present = self.sql.installed(conn)
            for name, (table, _) in sorted(present.items()):
                if name not in wanted or wanted[name][0] != table:
                    self.sql.drop_trigger(conn, name)
                    changes.append("dropped %s on %s" % (name, table))
            for name, (table, body, event) in sorted(wanted.items()):
                if name in present and present[name] == (table, body):
                    continue
                self.sql.create_trigger(conn, name, table, body, event)
                changes.append("%s %s on %s" % ("replaced" if name in present else "created", name, table))
            if changes:
                self._forget_build(conn)
        return changes

    def uninstall_triggers(self) -> List[str]:
        """Drop every crmagi trigger (configured or not); the index stops being ready."""
        self.require_supported()
        dropped = []
        with self._ddl() as conn:
            for name, (table, _) in sorted(self.sql.installed(conn).items()):
                self.sql.drop_trigger(conn, name)
                dropped.append("dropped %s on %s" % (name, table))
            self._forget_build(conn)
        return dropped

    def drop_table(self):
        """Drop the index tables; only once no trigger writes to them (uninstall first)."""
        self.require_supported()
        with self._ddl() as conn:
            if self.sql.installed(conn):
                raise PhoneIndexError("crmagi triggers still write to %s: uninstall them first" % INDEX_TABLE)
            self.sql.drop_tables(conn, STATE_TABLE)

    @contextmanager
    def _ddl(self):
        """A transaction whose DDL gives up after 10 s instead of queueing the CRM's own queries
        behind a metadata lock it waits for (e.g. a long transaction on contacts)."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self.sql.ddl_lock_wait[0])
            try:
                yield conn
            finally:
                conn.exec_driver_sql(self.sql.ddl_lock_wait[1])

    def _forget_build(self, conn):
        if self.sql.table_exists(conn, STATE_TABLE):
            conn.exec_driver_sql("DELETE FROM %s" % self.sql.quote(STATE_TABLE))

    # -- readiness ---------------------------------------------------------------

    def status(self) -> Tuple[bool, str]:
        """(ready, why): cheap (two small reads); Directory asks about once a minute."""
        if not self.supported:
            return False, "needs MariaDB or MySQL (this CRM database is %s)" % self.engine.dialect.name
        with self.engine.connect() as conn:
            missing = self._trigger_problems(conn)
            if missing:
                return False, "%s (run `crmagi index install`, then `crmagi index rebuild`)" % missing
            try:
                state = dict(conn.execute(text("SELECT name, value FROM %s" % STATE_TABLE)).all())
            except sa_exc.ProgrammingError:
                return False, "%s not created (run `crmagi index install`)" % STATE_TABLE
        if state.get("fingerprint") != self._generated()[1]:
            return False, "not rebuilt since the triggers were installed (run `crmagi index rebuild`)"
        return True, "ready, rebuilt %s" % state.get("built_at", "?")

    def is_ready(self) -> bool:
        return self.status()[0]

    def _generated(self):
        if self._wanted is None:
            self._wanted = (self.sql.wanted(self.rules.modules), self.sql.fingerprint(self.rules.modules))
        return self._wanted

    def _trigger_problems(self, conn):
        """'' when every wanted trigger is installed as generated, else what is wrong."""
        wanted = self._generated()[0]
        present = self.sql.installed(conn, sorted({table for table, _, _ in wanted.values()}))
        missing = [name for name, (table, body, _) in sorted(wanted.items()) if present.get(name) != (table, body)]
        if missing:
            return "triggers missing or outdated: %s" % ", ".join(missing)
        return ""

    # -- lookup --------------------------------------------------------------------

    def candidates(self, caller: phone.PhoneKey, suffix_digits: int, limit: int = MAX_CANDIDATES,
                   conn=None) -> List[Tuple[str, str, str]]:
        """(module, record_id, field) of the values whose last digits are the caller's last
        ``suffix_digits`` (all of the caller's digits when it has fewer): one index range read.
        ``conn``: run it on this connection (Directory reads the records on the same one)."""
        tail = phone.suffix(caller, min(suffix_digits, triggers.KEY_DIGITS))
        if not (tail.isascii() and tail.isdigit()):
            return []
        stmt = text(self.sql.candidates_sql(limit))
        if conn is None:
            with self.engine.connect() as own:
                return [tuple(row) for row in own.execute(stmt, {"p": tail[::-1] + "%"})]
        return [tuple(row) for row in conn.execute(stmt, {"p": tail[::-1] + "%"})]

    def pending(self) -> int:
        """Rows written by a trigger whose e164/national await the next rebuild."""
        self.require_supported()
        with self.engine.connect() as conn:
            if not self.sql.table_exists(conn, INDEX_TABLE):
                return 0
            return conn.execute(text("SELECT COUNT(*) FROM %s WHERE parsed = 0" % INDEX_TABLE)).scalar()

    def source_count(self) -> int:
        """Records of the configured tables (the rebuild's progress total)."""
        tables = self._tables()
        with self.engine.connect() as conn:
            return sum(conn.execute(select(func.count()).select_from(tables[t])).scalar()
                       for t in dict.fromkeys(spec.table for spec in self.rules.modules))

    # -- rebuild and check ----------------------------------------------------------

    def rebuild(self, progress: Optional[Callable[[int], None]] = None, full: bool = False) -> int:
        """Bring every row in line with the CRM tables; returns the rows written or deleted.

        Safe to rerun (an up-to-date index writes nothing, not even e164) and
        safe while users edit (crmsync/indexsync.py: each row is written only
        if the source row, re-read under a shared lock, still says so).
        ``full`` recomputes e164/national of every row (automatic when
        ``default_region`` changed since the last rebuild).  ``progress`` is
        called with the number of source records of each batch.
        """
        self.ensure_table()
        tables = self._tables()
        started = time.monotonic()
        with indexsync.session(self.engine, self.sql.session_settings) as conn:
            with indexsync.transaction(conn):
                triggers_ok = not self._trigger_problems(conn)
                state = dict(conn.execute(text("SELECT name, value FROM %s" % STATE_TABLE)).all())
            if not triggers_ok:
                log.warning("rebuilding without the crmagi triggers: edits made meanwhile are not indexed "
                            "(run `crmagi index install`); lookups will not use the index")
            full = full or state.get("region") != self.rules.default_region
            records, written, deleted = self.sql.rebuild(conn, self.rules, tables, self.batch_size, full, progress)
            with indexsync.transaction(conn):
                conn.exec_driver_sql("DELETE FROM %s" % self.sql.quote(STATE_TABLE))
                if triggers_ok and not self._trigger_problems(conn):
                    conn.execute(text("INSERT INTO %s (name, value) VALUES ('fingerprint', :f), ('region', :r),"
                                      " ('built_at', :b)" % STATE_TABLE),
                                 {"f": self._generated()[1], "r": self.rules.default_region,
                                  "b": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")})
        self.last_rebuild = RebuildStats(records, written, deleted, time.monotonic() - started)
        return written + deleted

    def check(self, sample: Optional[int] = None, limit: int = 100) -> List[str]:
        """Rows that disagree with the CRM tables (missing, extra, wrong digits), as messages.

        The keys are recomputed in Python, independently of the triggers' SQL.
        ``sample``: that many records per module from a random point, instead
        of all.  Disagreements are read twice, so an edit racing the check is
        not reported.  Rows that merely await e164/national are counted by
        ``pending()``, not reported here.
        """
        self.require_supported()
        tables = self._tables()
        with indexsync.session(self.engine, self.sql.session_settings) as conn:
            if not self.sql.table_exists(conn, INDEX_TABLE):
                return ["%s: table not found (run `crmagi index install`)" % INDEX_TABLE]
            return indexsync.Sync(conn, self.rules, self.batch_size).check(tables, sample, limit)
