"""Engine creation and reflection of the CRM tables crmagi reads and writes.

SuiteCRM declares no foreign keys and its schema varies between versions and
installs (custom fields, custom modules), so crmagi never carries a copy of it:
the configured tables are reflected once and checked column by column.
"""
import functools
import threading
import time
import weakref

from sqlalchemy import MetaData, create_engine, event, inspect, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool, StaticPool

from . import dialect as dialects


class SchemaError(Exception):
    """A table or column crmagi needs is missing; the message names table.column."""


class CrmUnavailable(Exception):
    """The CRM database cannot be reached (or timed out)."""


CALL_TABLES = ("calls", "calls_users")
CALL_COLUMNS = {
    "calls": ("id", "name", "date_entered", "date_modified", "modified_user_id", "created_by",
              "description", "deleted", "assigned_user_id", "duration_hours", "duration_minutes",
              "date_start", "date_end", "parent_type", "parent_id", "status", "direction"),
    "calls_users": ("id", "call_id", "user_id", "required", "accept_status", "date_modified", "deleted"),
    "users": ("id", "user_name", "first_name", "last_name", "status", "deleted"),
    "accounts_contacts": ("contact_id", "account_id", "deleted"),
    "accounts": ("id", "name", "deleted"),
}


IDLE_PING = 30.0     # seconds a pooled connection may sit unused before it is pinged on checkout


def make_engine(url, pool_size=20, connect_timeout=3.0, query_timeout=5.0, read_only=False):
    """An engine whose every socket operation is bounded in time.

    PyMySQL is pure Python, so under gevent's monkey-patching its reads yield
    to the hub (pymssql waits through its gevent wait callback, see
    crmsync/dialect/mssql.py); the read/write timeouts make a hung database
    fail instead of holding a pooled connection for ever.  ``read_only``
    engines (lookups) run in autocommit.  No MariaDB engine rolls back a
    connection going back to the pool (one round trip per transaction; see
    MySQL.pool_args in crmsync/dialect/mysql.py).
    A connection is pinged on checkout only after it sat idle
    for IDLE_PING seconds, not on every checkout (another round trip saved
    on the hot path; a database restart still costs no failed call after a
    quiet period).
    """
    parsed = make_url(url)
    dialect = dialects.named(parsed.get_backend_name())
    kwargs = {}
    if dialect.name == "sqlite":
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": query_timeout}}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=connect_timeout,
                      pool_recycle=3600, **dialect.pool_args(parsed, connect_timeout, query_timeout))
        if read_only:
            kwargs.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    engine = create_engine(url, **kwargs)
    if dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "connect", lambda dbapi_connection, _record: dialect.on_connect(dbapi_connection))
        event.listen(engine, "checkin", _checked_in)
        event.listen(engine, "checkout", functools.partial(_ping_if_idle, dialect))
    return engine


_ERROR_HOOKS = weakref.WeakKeyDictionary()     # engine -> watch_errors callbacks


def watch_errors(engine, callback):
    """``callback(exception class name)`` for every error the database driver raises on
    ``engine``, failed connects included: metrics without SQLAlchemy outside crmsync.
    Two answers are not errors: SQLAlchemy's MySQL ``has_table`` asks ``DESCRIBE`` and
    expects error 1146 for a table that does not exist yet, and a duplicate key is how
    CallStore's idempotent writes learn that a replayed or racing write already landed."""
    dialect = dialects.of(engine)

    def seen(context):
        if not dialect.describes_missing_table(context.statement or ""):
            _report(dialect, callback, context.original_exception)
    event.listen(engine, "handle_error", seen)
    # The hot path (crmsync/sqlbatch.py) drives DBAPI connections itself: it reports here.
    _ERROR_HOOKS.setdefault(engine, []).append(callback)


def driver_error(engine, exc):
    """A DBAPI error raised outside SQLAlchemy's execution (crmsync/sqlbatch.py, the index
    lookup): counted by ``watch_errors`` as if SQLAlchemy had seen it."""
    for callback in _ERROR_HOOKS.get(engine, ()):
        _report(dialects.of(engine), callback, exc)


def _report(dialect, callback, exc):
    if not dialect.is_duplicate(exc):
        callback(type(exc).__name__)


def make_probe_engine(url, timeout=1.0):
    """An engine opening a new connection each time (NullPool), for the health probe: it then
    sees what the next pooled connection would (a refused login, a dropped database), not a
    connection opened before the outage."""
    parsed = make_url(url)
    dialect = dialects.named(parsed.get_backend_name())
    if dialect.name == "sqlite":
        return make_engine(url, query_timeout=timeout)
    # Its connect every probe_interval built an SSLContext too (see MySQL.connect_args):
    # 30-60 ms of blocked event loop every 2 s, the p99 of the AGI answers.
    return create_engine(url, poolclass=NullPool, connect_args=dialect.connect_args(parsed, timeout, timeout))


def ping(engine):
    """One ``SELECT 1``; raises when the database does not answer (the health probe)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _checked_in(_dbapi_connection, record):
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect, dbapi_connection, record, _proxy):
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since > IDLE_PING:
        try:
            dialect.ping(dbapi_connection)
        except Exception as exc:
            # The pool then discards this connection and checks out (or opens) another.
            raise DisconnectionError("stale pooled connection: %s" % exc) from exc


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Schema:
    """Reflected tables, loaded on first use and re-tried until the database answers."""

    def __init__(self, engine, tables, required_columns=None):
        self.engine = engine
        self.wanted = tuple(dict.fromkeys(tables))
        self.required = dict(required_columns or {})
        self._tables = None
        self._lock = threading.Lock()

    def tables(self):
        if self._tables is None:
            with self._lock:
                if self._tables is None:
                    self._tables = self._reflect()
        return self._tables

    def _reflect(self):
        existing = set(inspect(self.engine).get_table_names())
        present = [name for name in self.wanted if name in existing]
        metadata = MetaData()
        metadata.reflect(self.engine, only=present)
        return dict(metadata.tables)

    def table(self, name):
        tables = self.tables()
        if name not in tables:
            raise SchemaError("%s: table not found in the CRM database" % name)
        return tables[name]

    def has(self, name):
        return name in self.tables()

    def problems(self):
        """Every missing table.column, as messages (empty when all is well)."""
        tables = self.tables()
        found = []
        for name, columns in self.required.items():
            if name not in tables:
                found.append("%s: table not found in the CRM database" % name)
                continue
            for column in columns:
                if column not in tables[name].c:
                    found.append("%s.%s: column not found" % (name, column))
        return found

    def check(self):
        problems = self.problems()
        if problems:
            raise SchemaError("; ".join(problems))
