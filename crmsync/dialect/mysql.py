"""MariaDB/MySQL (PyMySQL): the statements as crmagi always sent them.

A transaction's statements and its COMMIT go as ONE packet (the connection has
CLIENT.MULTI_STATEMENTS; PyMySQL escapes the parameters client-side, ``mogrify``), on MariaDB
wrapped in ``BEGIN NOT ATOMIC ... END`` so that the server answers with one OK packet.  A
statement that fails stops the packet; the caller then rolls back.
"""
import functools
import json
import re
from datetime import datetime

from pymysql.constants import CLIENT, SERVER_STATUS
from pymysql.converters import escape_string

DUPLICATE_KEY = 1062
KEY_DOES_NOT_EXIST = 1176      # an index hint names a key the table lacks
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205


BLOCK_BEGIN = "BEGIN NOT ATOMIC "     # a MariaDB compound statement; bench/load_probes.py unwraps it
_WHOLE_SECOND = "'%Y-%m-%d %H:%M:%S'"     # PyMySQL's escape_datetime without microseconds


def literals(conn, params):
    """The SQL literals of ``params`` exactly as PyMySQL's ``escape`` writes them (its escape
    table), for the hot path's types without its dispatch per value: ``escape`` costs three
    or four Python calls a value, and a call's start alone has ~45 values.  str, int, None and
    whole-second datetimes are written here; any other type, and every value while the server
    is in NO_BACKSLASH_ESCAPES mode, go through PyMySQL itself."""
    escape = conn.escape
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return tuple(map(escape, params))
    out = []
    for value in params:
        kind = type(value)
        if kind is str:
            out.append("'" + escape_string(value) + "'")
        elif kind is int:
            out.append(str(value))
        elif value is None:
            out.append("NULL")
        elif kind is datetime and not value.microsecond and value.year >= 1000:
            out.append(value.strftime(_WHOLE_SECOND))
        else:
            out.append(escape(value))
    return tuple(out)


def _packet(cursor, statements):
    """``(sql, params)`` statements as the text of one multi-statement packet."""
    conn = cursor.connection
    return ";\n".join([sql % literals(conn, params) for sql, params in statements])


@functools.lru_cache(maxsize=16)
def runs_blocks(server_version):
    """Whether the server runs ``BEGIN NOT ATOMIC ... END`` outside a stored program:
    MariaDB from 10.1.1 (its version string ``5.5.5-10.11.19-MariaDB-...``, without the
    ``5.5.5-`` from 11.0 on); MySQL does not."""
    found = re.match(r"(?:5\.5\.5-)?(\d+)\.(\d+)\.(\d+)-MariaDB", server_version or "")
    return bool(found) and tuple(map(int, found.groups())) >= (10, 1, 1)


def errno(exc):
    """The server's error number of a DBAPI error (or of the one SQLAlchemy wrapped), else None."""
    args = getattr(getattr(exc, "orig", exc), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MySQL:
    """MariaDB/MySQL; also the base of the other parts, which change what differs."""
    name = "mysql"
    packed = True              # a transaction is one round trip
    # The lookup's record row as ONE JSON_ARRAY column: PyMySQL parses a column description
    # per column per query in Python (13 of them: ~100 us of a ~0.5 ms lookup).
    json_rows = True
    lock_hint = ""             # after a table name in a locking SELECT (SQL Server's table hint)
    lock_suffix = " FOR UPDATE"
    duplicate_errors = (DUPLICATE_KEY,)
    deadlock_errors = (DEADLOCK,)
    missing_key_errors = (KEY_DOES_NOT_EXIST,)

    @staticmethod
    def quote(name):
        return "`%s`" % name

    def row_columns(self, columns):
        """The select list ``columns`` (SQL) of a hot-path read as one JSON_ARRAY column where
        ``json_rows`` (a finish's two reads: 6 column descriptions fewer to parse), else as is."""
        return "JSON_ARRAY(%s)" % columns if self.json_rows else columns

    def rows_of(self, rows):
        """The rows of a read whose select list is ``row_columns``, as tuples of values."""
        return [tuple(json.loads(row[0])) for row in rows] if self.json_rows else rows

    def same(self, column):
        """SQL true when ``column`` equals the next parameter, NULL equal to NULL."""
        return "%s <=> %%s" % self.quote(column)

    @functools.lru_cache(maxsize=256)
    def insert_sql(self, table, columns):
        q = self.quote
        return "INSERT INTO %s (%s) VALUES (%s)" % (q(table), ", ".join(map(q, columns)),
                                                    ", ".join(["%s"] * len(columns)))

    @functools.lru_cache(maxsize=256)
    def update_sql(self, table, columns, key):
        q = self.quote
        return "UPDATE %s SET %s WHERE %s = %%s" % (q(table), ", ".join("%s = %%s" % q(c) for c in columns), q(key))

    def add_column_sql(self, table, column, kind):
        return "ALTER TABLE %s ADD COLUMN %s %s" % (table, column, kind)

    # -- the hot path's driver calls --------------------------------------------------

    def driver_sql(self, sql):
        """The text handed to the DBAPI cursor."""
        return sql

    def driver_value(self, value):
        return value

    def run_batch(self, raw, cursor, statements):
        """Run ``statements`` and commit, in one round trip; the first result set's rows (only
        the first statement may be a SELECT).  On MariaDB the packet is one compound statement:
        the server answers it with ONE OK packet instead of one per statement, each of which
        PyMySQL reads in Python (~25 us; README "One OK packet per write transaction on
        MariaDB").  A failing statement ends the block with its error, as it ends a
        multi-statement packet: nothing after it runs, and the caller rolls back."""
        packet = _packet(cursor, [*statements, ("COMMIT", ())])
        if runs_blocks(cursor.connection.server_version):
            packet = BLOCK_BEGIN + packet + ";\nEND"
        cursor.execute(packet)
        first = list(cursor.fetchall() or ())
        while cursor.nextset():
            pass
        return first

    def run_batch_sets(self, cursor, statements):
        """``run_batch``, returning each statement's rows (one result per statement, the
        COMMIT's dropped)."""
        return self.read_sets(cursor, [*statements, ("COMMIT", ())])[:-1]

    def read_sets(self, cursor, queries):
        """Each SELECT's rows, the SELECTs sent as one packet."""
        cursor.execute(_packet(cursor, queries))
        sets = [[tuple(row) for row in cursor.fetchall() or ()]]
        while cursor.nextset():
            sets.append([tuple(row) for row in cursor.fetchall() or ()])
        return sets

    def driver_statement(self, compiled):
        """(text, parameters) of a compiled SQLAlchemy statement, for a DBAPI cursor (the index
        lookup runs its compiled UNION so, without SQLAlchemy's per-call work)."""
        return str(compiled), dict(compiled.params)

    def phone_index(self, engine):
        """The phone index's SQL for this database (crmsync/phoneindex.py)."""
        from .mysql_index import MySqlIndexSql
        return MySqlIndexSql(engine)

    @staticmethod
    def end_read(driver_connection):
        """End the transaction a read on the driver's own cursor began, unless the connection
        is in autocommit (the lookups' engine): SQLAlchemy did not see it begin, so nothing
        else would end it, and the pooled connection would keep its snapshot and metadata locks."""
        if not driver_connection.get_autocommit():
            driver_connection.rollback()

    # -- errors -----------------------------------------------------------------------

    def is_duplicate(self, exc):
        return errno(exc) in self.duplicate_errors

    def is_deadlock(self, exc):
        return errno(exc) in self.deadlock_errors

    def is_missing_key(self, exc):
        return errno(exc) in self.missing_key_errors

    # -- connections ------------------------------------------------------------------

    def connect_args(self, parsed, connect_timeout, query_timeout):
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

    def pool_args(self, parsed, connect_timeout, query_timeout):
        """create_engine arguments of a pooled engine (crmsync/db.py make_engine)."""
        connect_args = self.connect_args(parsed, connect_timeout, query_timeout)
        # Several statements per packet: a call's transaction is one round trip (crmsync/sqlbatch.py).
        # FOUND_ROWS is what SQLAlchemy's dialect sets; naming client_flag replaces its value.
        connect_args["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS
        # No ROLLBACK when a connection goes back (a round trip per transaction): every
        # user ends its own -- SQLAlchemy's Connection rolls back on close what it did
        # not commit, and crmsync/sqlbatch.py commits or rolls back explicitly.
        return {"connect_args": connect_args, "pool_reset_on_return": None}

    def on_connect(self, dbapi_connection):
        """Session settings of a new connection (none needed here)."""

    @staticmethod
    def ping(dbapi_connection):
        dbapi_connection.ping(reconnect=False)

    def describes_missing_table(self, statement):
        """SQLAlchemy's ``has_table`` asks ``DESCRIBE`` and expects error 1146: no error."""
        return statement.lstrip().upper().startswith("DESCRIBE ")


MYSQL = MySQL()
