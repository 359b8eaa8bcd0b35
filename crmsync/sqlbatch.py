"""The hot path's SQL: statements built once per shape, a transaction in as few round trips
as the database allows.

Every call's writes are short transactions of known statements (crmsync/calls.py,
livecalls.py).  Through SQLAlchemy each statement was compiled per call (cache keys,
parameter processing: a quarter of crmagi's CPU per call) and each was one round trip, plus
the pool's ROLLBACK when the connection went back.  Here:

* ``Statements`` builds ``INSERT``/``UPDATE`` texts from a table name and its column names,
  once per shape (memoized): no statement building per call, only the parameter tuples.
* On MariaDB/MySQL a ``Transaction`` sends the statements of one transaction and its
  ``COMMIT`` as ONE packet (the connection has CLIENT.MULTI_STATEMENTS; PyMySQL escapes the
  parameters client-side as it always does, ``mogrify``), and a leading read (``SELECT ...
  FOR UPDATE``) as one more.  A statement that fails stops the packet; the transaction is
  then rolled back before the connection goes back to the pool.  The write engine returns
  its connections without the pool's ROLLBACK (crmsync/db.py): every user of it ends its
  transactions itself (SQLAlchemy's Connection rolls back on close what it did not commit).
* On SQL Server the statements and the end of the transaction are one T-SQL batch.
* On SQLite (the demo CRM) the same statements run one by one (``%s`` becomes ``?``, ``<=>``
  becomes ``IS``, ``FOR UPDATE`` is dropped: SQLite has one writer anyway), then commit.
How each database is spoken to is crmsync/dialect/; statements are built with the engine's
dialect (``insert``/``update`` take it; MySQL's is the default).

Errors are the driver's own (PyMySQL's, pymssql's or sqlite3's); crmsync/calls.py maps them.
"""
from contextlib import contextmanager

from . import dialect as dialects
from .db import driver_error


def _dbapi_error(engine):
    dbapi = engine.dialect.dbapi
    return dbapi.Error if dbapi is not None else ()


def multi_statements(engine):
    return dialects.of(engine).packed


def insert(table, values, dialect=dialects.MYSQL):
    """(sql, params) of one INSERT; ``values`` is a dict whose key order is the column order."""
    return dialect.insert_sql(table, tuple(values)), tuple(values.values())


def update(table, values, key, key_value, dialect=dialects.MYSQL):
    return dialect.update_sql(table, tuple(values), key), tuple(values.values()) + (key_value,)


class Transaction:
    """One transaction on one pooled DBAPI connection: ``read`` (optional, first), then
    ``commit(statements)`` or ``end()``."""

    def __init__(self, raw, dialect):
        self.raw, self.dialect = raw, dialect
        self.open = False

    def read(self, sql, params, names=False):
        """Rows of a SELECT (the transaction's first statement: it begins it)."""
        cursor = self.raw.cursor()
        try:
            self.open = True
            cursor.execute(self.dialect.driver_sql(sql), [self.dialect.driver_value(v) for v in params])
            rows = cursor.fetchall()
            if names:
                columns = [d[0] for d in cursor.description]
                return [dict(zip(columns, row)) for row in rows]
            return [tuple(row) for row in rows]
        finally:
            cursor.close()

    def read_sets(self, queries):
        """The rows of each SELECT of ``queries`` ((sql, params) pairs), in one round trip where
        the database takes several statements at once; the transaction's first statements."""
        cursor = self.raw.cursor()
        try:
            self.open = True
            return self.dialect.read_sets(cursor, queries)
        finally:
            cursor.close()

    def commit(self, statements):
        """Run ``statements`` ((sql, params) pairs) and commit: one round trip on MySQL.
        Returns the rows of the first statement when it is a SELECT (e.g. a ``FOR UPDATE``
        lock that says whether the row exists), else an empty list."""
        first = self._committing(lambda cursor: self.dialect.run_batch(self.raw, cursor, statements))
        return [tuple(row) for row in first]

    def commit_sets(self, statements):
        """``commit``, returning every statement's rows ([] for one that returns none): several
        calls' transactions as one (crmsync/groupcommit.py), each op finding its own rows."""
        return self._committing(lambda cursor: self.dialect.run_batch_sets(cursor, statements))

    def _committing(self, run):
        """``run(cursor)``'s result; the transaction counts as open until it returns (a failure
        leaves it open: ``transaction`` then rolls it back)."""
        self.open = True
        cursor = self.raw.cursor()
        try:
            result = run(cursor)
        finally:
            cursor.close()
        self.open = False
        return result

    def end(self):
        """End a transaction that wrote nothing."""
        if self.open:
            self.raw.rollback()
            self.open = False


@contextmanager
def transaction(engine):
    """A Transaction on a connection of ``engine``'s pool; rolled back if the block raises
    (a connection that cannot even roll back is discarded, not pooled)."""
    raw = engine.raw_connection()
    tx = Transaction(raw, dialects.of(engine))
    try:
        yield tx
        tx.end()
    except BaseException as exc:
        if isinstance(exc, _dbapi_error(engine)):
            driver_error(engine, exc)       # the metrics SQLAlchemy's handle_error would give
        try:
            tx.open = True
            tx.end()
        except Exception:     # noqa: BLE001 - the connection is broken: drop it
            raw.invalidate()
        raise
    finally:
        raw.close()
