"""The caller lookup's statement, PREPAREd once per pooled connection on MariaDB.

Sent as text, the lookup's UNION is parsed and resolved by MariaDB on every call: 60-90 us
of the ~0.4 ms the statement takes on 1M contacts (``SHOW PROFILE``, "Starting").  Prepared
once per connection, a lookup sends ``EXECUTE <name> USING 'x%', 'x%', 'x%'``: still one
round trip, the value still escaped by PyMySQL.  MariaDB takes literals after USING (since
10.2); MySQL only user variables, so on MySQL (and SQL Server, SQLite) the statement stays
text (``TextRead``).

The server forgets a connection's statements when the connection ends; SQLAlchemy's pool
keeps ``info`` per DBAPI connection, so a new connection prepares again.  A statement the
server no longer knows (error 1243: deallocated, or the session was reset under us) is
prepared again and run once more.  A server that refuses more statements
(``max_prepared_stmt_count``, error 1461) leaves that connection on the text statement.
"""
import hashlib
import logging

from .dialect.mysql import errno

log = logging.getLogger(__name__)

UNKNOWN_STATEMENT = 1243
TOO_MANY_STATEMENTS = 1461
_MARK = "crmagi-prepared-parameter-5d0c"     # stands for the parameter while compiling


class TextRead:
    """The statement as text with its parameters, run through the driver's cursor."""

    def __init__(self, sql, params, name):
        self.sql, self.params, self.name = sql, params, name

    def rows(self, pooled, cursor, value):
        """Every row for ``value`` (the parameter ``name``) on ``cursor`` of ``pooled``."""
        cursor.execute(self.sql, dict(self.params, **{self.name: value}))
        return cursor.fetchall()


class PreparedRead(TextRead):
    """``TextRead``, but EXECUTEd from a statement prepared once on each connection."""

    def __init__(self, sql, params, name, prepared_sql, uses):
        super().__init__(sql, params, name)
        self.prepared_sql = prepared_sql
        self.statement = "crmagi_" + hashlib.sha1(prepared_sql.encode()).hexdigest()[:20]
        self.execute_sql = "EXECUTE %s USING %s" % (self.statement, ", ".join(["%s"] * uses))
        self.uses = uses

    def rows(self, pooled, cursor, value):
        state = pooled.info.get(self.statement)
        if state is None:
            state = self._prepare(pooled, cursor)
        if not state:
            return super().rows(pooled, cursor, value)
        try:
            cursor.execute(self.execute_sql, (value,) * self.uses)
        except Exception as exc:
            if errno(exc) != UNKNOWN_STATEMENT:
                raise
            log.info("prepared lookup %s unknown to the server: preparing it again", self.statement)
            if not self._prepare(pooled, cursor):
                return super().rows(pooled, cursor, value)
            cursor.execute(self.execute_sql, (value,) * self.uses)
        return cursor.fetchall()

    def _prepare(self, pooled, cursor):
        """Prepare on this connection; False (and the text statement from now on) when refused."""
        try:
            cursor.execute("PREPARE %s FROM %%s" % self.statement, (self.prepared_sql,))
        except Exception as exc:
            if errno(exc) != TOO_MANY_STATEMENTS:
                raise
            log.warning("MariaDB refused to prepare the lookup (max_prepared_stmt_count reached): "
                        "this connection sends it as text")
            pooled.info[self.statement] = False
            return False
        pooled.info[self.statement] = True
        return True


def prepared_text(statement, dialect, name):
    """(SQL, uses): ``statement`` compiled with its constants as literals and each use of the
    parameter ``name`` as ``?``; None when that text cannot be trusted (a ``%`` in it: the
    dialect may have doubled it for its paramstyle)."""
    compiled = statement.params({name: _MARK}).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    sql, quoted = str(compiled), "'%s'" % _MARK
    uses = sql.count(quoted)
    sql = sql.replace(quoted, "?")
    if uses == 0 or "%" in sql or _MARK in sql:
        return None
    return sql, uses


def read_for(engine, statement, sql, params, name):
    """How ``statement`` (already compiled for the driver as ``sql`` and ``params``) runs on
    ``engine``: prepared on MariaDB, as text elsewhere."""
    if getattr(engine.dialect, "is_mariadb", False):
        found = prepared_text(statement, engine.dialect, name)
        if found:
            return PreparedRead(sql, params, name, *found)
    return TextRead(sql, params, name)
