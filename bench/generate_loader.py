"""bench/generate.py's loading into MariaDB: rows of a table go to a TSV file (Feed) that a
background thread (Loader) loads with ``LOAD DATA LOCAL INFILE``, or with multi-row INSERTs
when the server refuses local infile, while the next chunk is generated; the tables' secondary
indexes are dropped for the load and rebuilt once at the end (their exact SuiteCRM definitions)."""
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import Progress
from generate_shapes import NULL

INDEXED_TABLES = ("accounts", "contacts", "leads", "accounts_contacts")
LINKS = "accounts_contacts"        # not counted in the progress: its total is known only at the end


def connect(database, local_infile=True):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=database,
                           charset="utf8mb4", autocommit=True, local_infile=local_infile)


def infile_works(conn):
    """Whether this server and client accept LOAD DATA LOCAL INFILE (tried on a temporary table)."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@local_infile")
        if not cur.fetchone()[0]:
            return False
        path = tempfile.mktemp(suffix=".tsv")
        Path(path).write_text("x\n")
        try:
            cur.execute("CREATE TEMPORARY TABLE crmagi_bench_probe (v varchar(10))")
            cur.execute("LOAD DATA LOCAL INFILE %s INTO TABLE crmagi_bench_probe", (path,))
            cur.execute("DROP TEMPORARY TABLE crmagi_bench_probe")
            return True
        except Exception:
            return False
        finally:
            os.unlink(path)


def _secondary_indexes(conn, table):
    """The KEY clauses of SHOW CREATE TABLE (name, definition)."""
    with conn.cursor() as cur:
        cur.execute("SHOW CREATE TABLE `%s`" % table)
        ddl = cur.fetchone()[1]
    found = []
    for line in ddl.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith(("KEY ", "UNIQUE KEY ")):
            found.append((line.split("`")[1], line))
    return found


def prepare(conn, keep_indexes):
    """Session set for the load; the secondary indexes dropped unless kept: {table: [(name, ddl)]}."""
    dropped = {}
    with conn.cursor() as cur:
        cur.execute("SET SESSION unique_checks=0, foreign_key_checks=0")
        if not keep_indexes:
            for table in INDEXED_TABLES:
                keys = _secondary_indexes(conn, table)
                if keys:
                    cur.execute("ALTER TABLE `%s` %s" % (table, ", ".join("DROP INDEX `%s`" % n for n, _ in keys)))
                    dropped[table] = keys
    return dropped


def rebuild(conn, dropped):
    """The dropped indexes added back (one ALTER a table) and the tables analyzed; its seconds."""
    started = time.monotonic()
    with conn.cursor() as cur:
        for table, keys in dropped.items():
            print("rebuilding the %d secondary indexes of %s" % (len(keys), table), file=sys.stderr)
            cur.execute("ALTER TABLE `%s` %s" % (table, ", ".join("ADD " + ddl for _, ddl in keys)))
        for table in INDEXED_TABLES + ("users",):
            cur.execute("ANALYZE TABLE `%s`" % table)
            cur.fetchall()
    return time.monotonic() - started


class Loader(threading.Thread):
    """Loads TSV chunk files (LOAD DATA LOCAL INFILE, else multi-row INSERT) in the background."""

    def __init__(self, conn, method):
        super().__init__(daemon=True)
        self.conn, self.method = conn, method
        self.jobs = queue.Queue(maxsize=2)      # two chunks ahead at most: bounded memory and disk
        self.loaded, self.warnings, self.error = {}, 0, None

    def run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            table, columns, path, rows = job
            try:
                if self.error is None:
                    self._load(table, columns, path)
                    self.loaded[table] = self.loaded.get(table, 0) + rows
            except Exception as exc:   # reported by the main thread
                self.error = exc
            finally:
                os.unlink(path)

    def _load(self, table, columns, path):
        with self.conn.cursor() as cur:
            if self.method == "infile":
                cur.execute("LOAD DATA LOCAL INFILE %%s INTO TABLE `%s` CHARACTER SET utf8mb4 "
                            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (%s)"
                            % (table, ", ".join("`%s`" % c for c in columns)), (path,))
                self.warnings += getattr(cur, "warning_count", 0) or 0
            else:
                self._insert(cur, table, columns, path)

    @staticmethod
    def _insert(cur, table, columns, path):
        with open(path, encoding="utf-8") as handle:
            rows = [tuple(None if v == NULL else v for v in line.rstrip("\n").split("\t"))
                    for line in handle]
        stmt = "INSERT INTO `%s` (%s) VALUES (%s)" % (
            table, ", ".join("`%s`" % c for c in columns), ", ".join(["%s"] * len(columns)))
        for start in range(0, len(rows), 5000):     # PyMySQL turns this into multi-row INSERTs
            cur.executemany(stmt, rows[start:start + 5000])


class Feed:
    """put(table, columns, rows): the rows written to a TSV file and queued for the Loader, with
    a progress bar of the rows loaded; finish() waits for the last chunk, close() always."""

    def __init__(self, conn, method, total_rows):
        self.tmpdir = tempfile.mkdtemp(prefix="crmagi-gen-")
        self.loader = Loader(conn, method)
        self.loader.start()
        self.progress = Progress("rows", total_rows)

    def put(self, table, columns, rows):
        if not rows:
            return
        if self.loader.error is not None:
            raise self.loader.error
        fd, path = tempfile.mkstemp(suffix=".tsv", dir=self.tmpdir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join("\t".join(row) + "\n" for row in rows))
        self.loader.jobs.put((table, columns, path, len(rows)))
        self.progress.update(sum(v for k, v in self.loader.loaded.items() if k != LINKS))

    def finish(self):
        self.loader.jobs.put(None)
        self.loader.join()
        if self.loader.error is not None:
            raise self.loader.error
        self.progress.close()

    def close(self):
        """The loader stopped (after an error in the generation too); the empty directory removed."""
        if self.loader.is_alive():
            self.loader.jobs.put(None)
            self.loader.join()
        if not os.listdir(self.tmpdir):
            os.rmdir(self.tmpdir)
