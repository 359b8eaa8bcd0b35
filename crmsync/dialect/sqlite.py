"""SQLite (the demo CRM): the MySQL statements run one by one, then commit."""
from datetime import datetime

from .mysql import MySQL


class SQLite(MySQL):
    name = "sqlite"
    packed = False
    json_rows = False
    missing_key_errors = ()        # no index hints are sent to SQLite

    @staticmethod
    def end_read(driver_connection):
        if driver_connection.in_transaction:
            driver_connection.rollback()

    def driver_sql(self, sql):
        """``?`` placeholders, ``IS`` for the null-safe ``<=>``, no ``FOR UPDATE`` (SQLite has
        one writer anyway)."""
        return sql.replace("%s", "?").replace(" <=> ", " IS ").replace(" FOR UPDATE", "")

    def driver_value(self, value):
        # SQLAlchemy's SQLite DateTime storage format: rows written here read back through it.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

    def run_batch(self, raw, cursor, statements):
        first = None
        for sql, params in statements:
            cursor.execute(self.driver_sql(sql), [self.driver_value(v) for v in params])
            first = list(cursor.fetchall() or ()) if first is None else first
        raw.commit()
        return first or []

    def read_sets(self, cursor, queries):
        sets = []
        for sql, params in queries:
            cursor.execute(self.driver_sql(sql), [self.driver_value(v) for v in params])
            sets.append([tuple(row) for row in cursor.fetchall()])
        return sets

    def phone_index(self, engine):
        return None        # no triggers: lookups scan the phone columns

    def is_duplicate(self, exc):
        return "UNIQUE constraint failed" in str(getattr(exc, "orig", exc))

    def is_deadlock(self, exc):
        return False


SQLITE = SQLite()
