"""Engine creation and reflection of the CRM tables crmagi reads and writes.

SuiteCRM declares no foreign keys and its schema varies between versions and
installs (custom fields, custom modules), so crmagi never carries a copy of it:
the configured tables are reflected once and checked column by column.
"""
import threading
import time
import weakref

from pymysql.constants import CLIENT
from sqlalchemy import MetaData, create_engine, event, inspect, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool, StaticPool


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


_MYSQL_DUPLICATE_KEY = 1062
IDLE_PING = 30.0     # seconds a pooled connection may sit unused before it is pinged on checkout


def make_engine(url, pool_size=20, connect_timeout=3.0, query_timeout=5.0, read_only=False):
    """An engine whose every socket operation is bounded in time.

    PyMySQL is pure Python, so under gevent's monkey-patching its reads yield
    to the hub; the read/write timeouts make a hung database fail instead of
    holding a pooled connection for ever.  ``read_only`` engines (lookups)
    run in autocommit.  No engine rolls back a connection going back to the
    pool (one round trip per transaction; see pool_reset_on_return below).
    A connection is pinged on checkout only after it sat idle
    for IDLE_PING seconds, not on every checkout (another round trip saved
    on the hot path; a database restart still costs no failed call after a
    quiet period).
    """
    parsed = make_url(url)
    kwargs = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": query_timeout}}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
    elif parsed.get_backend_name() in ("mysql", "mariadb"):
        connect_args = _mysql_connect_args(parsed, connect_timeout, query_timeout)
        # Several statements per packet: a call's transaction is one round trip (crmsync/sqlbatch.py).
        # FOUND_ROWS is what SQLAlchemy's dialect sets; naming client_flag replaces its value.
        connect_args["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS
        kwargs.update(
            pool_size=pool_size, max_overflow=pool_size, pool_timeout=connect_timeout,
            pool_recycle=3600,
            connect_args=connect_args,
            # No ROLLBACK when a connection goes back (a round trip per transaction): every
            # user ends its own -- SQLAlchemy's Connection rolls back on close what it did
            # not commit, and crmsync/sqlbatch.py commits or rolls back explicitly.
            pool_reset_on_return=None,
        )
        if read_only:
            kwargs.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "checkin", _checked_in)
        event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _mysql_connect_args(parsed, connect_timeout, query_timeout):
    args = {"connect_timeout": max(1, int(round(connect_timeout))),
            "read_timeout": max(1, int(round(query_timeout))),
            "write_timeout": max(1, int(round(query_timeout))),
            "charset": "utf8mb4"}
    if not any(key.startswith("ssl") for key in parsed.query):
        # Without ssl_* options, PyMySQL >= 1.2 tries TLS opportunistically (unverified)
        # and builds an SSLContext on every connect: ~30 ms of CPU loading the CA store,
        # which blocks the gevent loop.  While the CRM is down every lookup and write
        # reconnects, and AGI answers then took seconds.  TLS stays available through
        # the URL (?ssl_ca=...), as with PyMySQL 1.1.
        args["ssl_disabled"] = True
    return args


_ERROR_HOOKS = weakref.WeakKeyDictionary()     # engine -> watch_errors callbacks


def watch_errors(engine, callback):
    """``callback(exception class name)`` for every error the database driver raises on
    ``engine``, failed connects included: metrics without SQLAlchemy outside crmsync.
    Two answers are not errors: SQLAlchemy's MySQL ``has_table`` asks ``DESCRIBE`` and
    expects error 1146 for a table that does not exist yet, and a duplicate key is how
    CallStore's idempotent writes learn that a replayed or racing write already landed."""
    def seen(context):
        if not (context.statement or "").lstrip().upper().startswith("DESCRIBE "):
            _report(callback, context.original_exception)
    event.listen(engine, "handle_error", seen)
    # The hot path (crmsync/sqlbatch.py) drives DBAPI connections itself: it reports here.
    _ERROR_HOOKS.setdefault(engine, []).append(callback)


def driver_error(engine, exc):
    """A DBAPI error raised outside SQLAlchemy's execution (crmsync/sqlbatch.py, the index
    lookup): counted by ``watch_errors`` as if SQLAlchemy had seen it."""
    for callback in _ERROR_HOOKS.get(engine, ()):
        _report(callback, exc)


def _report(callback, exc):
    if getattr(exc, "args", None) and exc.args[0] == _MYSQL_DUPLICATE_KEY or "UNIQUE constraint" in str(exc):
        return
    callback(type(exc).__name__)


def make_probe_engine(url, timeout=1.0):
    """An engine opening a new connection each time (NullPool), for the health probe: it then
    sees what the next pooled connection would (a refused login, a dropped database), not a
    connection opened before the outage."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("mysql", "mariadb"):
        return make_engine(url, query_timeout=timeout)
    # Its connect every probe_interval built an SSLContext too (see _mysql_connect_args):
    # 30-60 ms of blocked event loop every 2 s, the p99 of the AGI answers.
    return create_engine(url, poolclass=NullPool, connect_args=_mysql_connect_args(parsed, timeout, timeout))


def ping(engine):
    """One ``SELECT 1``; raises when the database does not answer (the health probe)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _checked_in(_dbapi_connection, record):
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy):
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since > IDLE_PING:
        try:
            dbapi_connection.ping(reconnect=False)
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
