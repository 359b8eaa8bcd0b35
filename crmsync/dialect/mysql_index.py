"""The phone index's SQL on MariaDB/MySQL: its tables, the triggers of crmsync/triggers.py,
and the session settings of its DDL.  crmsync/phoneindex.py asks for these by name."""
from sqlalchemy import text

from .. import indexsync, triggers
from ..indexsync import ASCII
from ..triggers import INDEX_TABLE, MAX_ID_LENGTH


class MySqlIndexSql:
    session_settings = indexsync.LOCK_WAIT
    # DDL gives up after 10 s instead of queueing the CRM's own queries behind a metadata
    # lock it waits for (e.g. a long transaction on contacts).
    ddl_lock_wait = ("SET SESSION lock_wait_timeout = 10", "SET SESSION lock_wait_timeout = DEFAULT")
    table_exists = staticmethod(indexsync.table_exists)

    def __init__(self, engine):
        self.mariadb = engine.dialect.name == "mariadb" or getattr(engine.dialect, "is_mariadb", False)

    @staticmethod
    def quote(name):
        return "`%s`" % name

    def id_collation(self, conn, table):
        """The character set and collation of the CRM's ids, for the index's record_id."""
        row = conn.execute(text(
            "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t AND COLUMN_NAME = 'id'"), {"t": table}).first()
        return "CHARACTER SET %s COLLATE %s" % tuple(row) if row and row[0] else ""

    def create_tables(self, conn, table, state_table):
        ids = self.id_collation(conn, table)
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS `%s` ("
            " module VARCHAR(100) %s NOT NULL,"
            " record_id VARCHAR(%d) %s NOT NULL,"
            " field VARCHAR(64) %s NOT NULL,"
            " digits_rev VARCHAR(%d) %s NOT NULL,"
            " e164 VARCHAR(16) %s NULL,"
            " national VARCHAR(32) %s NULL,"
            " parsed TINYINT(1) NOT NULL DEFAULT 0,"
            " PRIMARY KEY (module, record_id, field),"
            " KEY %s (digits_rev),"
            " KEY crmagi_phone_index_e164 (e164)"
            ") ENGINE=InnoDB COMMENT='crmagi: phone numbers of the CRM records, kept by triggers'"
            % (INDEX_TABLE, ASCII, MAX_ID_LENGTH, ids, ASCII, triggers.KEY_DIGITS, ASCII, ASCII, ASCII,
               triggers.DIGITS_KEY))
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS `%s` (name VARCHAR(64) %s NOT NULL PRIMARY KEY,"
            " value VARCHAR(255) NOT NULL) ENGINE=InnoDB" % (state_table, ASCII))

    def drop_tables(self, conn, state_table):
        conn.exec_driver_sql("DROP TABLE IF EXISTS `%s`, `%s`" % (INDEX_TABLE, state_table))

    # -- triggers ------------------------------------------------------------------

    @staticmethod
    def wanted(specs):
        """{trigger name: (table, body, event)}; ``(table, body)`` is what ``installed`` reads back."""
        return {name: (table, body, event) for name, (table, event, body) in triggers.bodies(specs).items()}

    @staticmethod
    def fingerprint(specs):
        return triggers.fingerprint(specs)

    @staticmethod
    def installed(conn, tables=None):
        return triggers.installed(conn, tables)

    def create_trigger(self, conn, name, table, body, event):
        if not self.mariadb:
            self.drop_trigger(conn, name)
        conn.exec_driver_sql(triggers.create_statement(name, table, event, body, replace=self.mariadb))

    @staticmethod
    def drop_trigger(conn, name):
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS `%s`" % name)

    @staticmethod
    def candidates_sql(limit):
        return "SELECT module, record_id, field FROM %s WHERE digits_rev LIKE :p LIMIT %d" % (INDEX_TABLE, limit)

    def rebuild(self, conn, rules, tables, batch_size, full, progress):
        """Every configured module in batches, keys computed in Python (crmsync/indexsync.py):
        (records read, rows written, rows deleted)."""
        records = written = deleted = 0
        sync = indexsync.Sync(conn, rules, batch_size, self.id_collation(conn, rules.modules[0].table))
        try:
            for spec in rules.modules:
                for batch in sync.batches(spec, tables[spec.table]):
                    w, d = sync.apply(spec, batch, full)
                    records, written, deleted = records + len(batch.rows), written + w, deleted + d
                    if progress:
                        progress(len(batch.rows))
            deleted += sync.drop_unconfigured()
        finally:
            sync.drop_stage()
        return records, written, deleted
