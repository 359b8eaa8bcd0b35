"""Microsoft SQL Server (pymssql), the database SugarCRM CE 6.5 also runs on.

pymssql, not pyodbc: it is one wheel with FreeTDS built in (pyodbc needs unixODBC and
Microsoft's ODBC driver installed on the box), and it has ``set_wait_callback``: before it
blocks for a reply it hands the socket to a callback, which here waits with gevent, so a
slow SQL Server query lets the other calls run (see ``green``).  Its paramstyle is ``%s``,
as PyMySQL's, so the hot path's statements only change their quoting and a few clauses.

A transaction is one round trip, as on MariaDB: T-SQL runs several statements sent as one
batch natively.  The connection has ``XACT_ABORT ON`` (``on_connect``), so a failing
statement (a duplicate key, a deadlock) ends the batch and rolls the transaction back, as
a failing statement stops a MariaDB multi-statement packet; without it SQL Server would
run the statements after the error and commit them.
"""
import gevent.socket

from .mysql import MySQL

DUPLICATE_KEY = 2627         # PRIMARY KEY / UNIQUE constraint
DUPLICATE_INDEX_KEY = 2601   # unique index
DEADLOCK = 1205              # chosen as the deadlock victim (1205 is a lock wait timeout on MySQL)


class SqlServer(MySQL):
    """The MySQL part with what T-SQL says differently (the statement builders are shared)."""
    name = "mssql"
    packed = True
    json_rows = False          # JSON_ARRAY only from SQL Server 2022: plain columns
    # T-SQL names the lock on the table: UPDLOCK is what FOR UPDATE takes (others may read,
    # no second writer), ROWLOCK keeps it to the call's row.
    lock_hint = " WITH (UPDLOCK, ROWLOCK)"
    lock_suffix = ""
    duplicate_errors = (DUPLICATE_KEY, DUPLICATE_INDEX_KEY)
    deadlock_errors = (DEADLOCK,)
    missing_key_errors = ()        # no index hints are sent to SQL Server

    @staticmethod
    def quote(name):
        return "[%s]" % name

    def same(self, column):
        # IS NOT DISTINCT FROM exists from SQL Server 2022 on only; INTERSECT treats NULLs as
        # equal on every version, and takes the parameter once (as ``<=>`` does).
        return "EXISTS (SELECT %s INTERSECT SELECT %%s)" % self.quote(column)

    def add_column_sql(self, table, column, kind):
        return "ALTER TABLE %s ADD %s %s" % (self.quote(table), self.quote(column), kind)

    def run_batch(self, raw, cursor, statements):
        """One T-SQL batch: the statements, then the end of pymssql's transaction and the start
        of the next, which is what its ``commit()`` sends (in two round trips)."""
        params = tuple(value for _, values in statements for value in values)
        cursor.execute(";\n".join([sql for sql, _ in statements] + ["COMMIT TRAN", "BEGIN TRAN"]), params)
        first = list(cursor.fetchall()) if cursor.description else []
        while cursor.nextset():
            pass
        return first

    def read_sets(self, cursor, queries):
        """Each SELECT's rows, the SELECTs as one T-SQL batch."""
        cursor.execute(";\n".join(sql for sql, _ in queries), tuple(v for _, values in queries for v in values))
        sets = [[tuple(row) for row in cursor.fetchall()] if cursor.description else []]
        while cursor.nextset():
            sets.append([tuple(row) for row in cursor.fetchall()] if cursor.description else [])
        return sets

    def driver_statement(self, compiled):
        # TOP's count is a post-compile parameter on SQL Server: rendered into the text here.
        state = compiled.construct_expanded_state(dict(compiled.params))
        return state.statement, dict(state.parameters)

    def phone_index(self, engine):
        """The phone index's SQL for this database (crmsync/phoneindex.py)."""
        from .mssql_index import SqlServerIndexSql
        return SqlServerIndexSql(engine)

    def connect_args(self, parsed, connect_timeout, query_timeout):
        green(query_timeout)
        # login_timeout bounds connect and login, which FreeTDS does without the wait callback.
        return {"login_timeout": max(1, int(round(connect_timeout))),
                "timeout": max(1, int(round(query_timeout))), "charset": "UTF-8"}

    def pool_args(self, parsed, connect_timeout, query_timeout):
        # The pool's ROLLBACK on check-in stays: pymssql's transaction state is its own
        # (BEGIN TRAN after every commit), and nothing here was measured against a server.
        return {"connect_args": self.connect_args(parsed, connect_timeout, query_timeout)}

    def on_connect(self, dbapi_connection):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET XACT_ABORT ON")
        finally:
            cursor.close()

    @staticmethod
    def end_read(driver_connection):
        if not driver_connection.autocommit_state:
            driver_connection.rollback()

    @staticmethod
    def ping(dbapi_connection):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        finally:
            cursor.close()

    def describes_missing_table(self, statement):
        return False


class _GreenWait:
    """pymssql's wait callback: wait for the server's reply with gevent, so the event loop runs
    meanwhile.  pymssql keeps ONE callback per process, so one limit serves every engine: the
    longest query_timeout asked for.  A reply that never comes raises a pymssql error whose
    text SQLAlchemy's pymssql dialect takes for a disconnect: the connection is discarded."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, fileno):
        import pymssql      # the mssql extra: imported only once an mssql engine exists
        timeout = pymssql.OperationalError(
            "Adaptive Server connection timed out: no reply within %g s ([crm] query_timeout)" % self.seconds)
        gevent.socket.wait_read(fileno, timeout=self.seconds or None, timeout_exc=timeout)


_WAIT = _GreenWait()


def green(query_timeout):
    """Install the gevent wait callback (once), waiting at least ``query_timeout`` seconds."""
    import pymssql
    _WAIT.seconds = max(_WAIT.seconds, float(query_timeout))
    pymssql.set_wait_callback(_WAIT)


MSSQL = SqlServer()
