"""Rebuild and check of crmagi_phone_index against the CRM tables (used by crmsync.phoneindex).

Both walk each configured table by primary key (keyset pagination, never
OFFSET) in batches, together with the index rows of the same id range; the
ranges cover every id, so rows of records that vanished are seen too.  The key
of every value is computed in Python (``triggers.digits_rev``), never trusted
from the triggers' SQL.

Rebuild, concurrency: a batch's rows are read without locks, so by the time the
batch is written a user may have changed a number (and the trigger written the
new key).  Writes therefore never go straight to the index: the batch is put in
a temporary table, and one ``INSERT … SELECT … ON DUPLICATE KEY UPDATE`` joins it
to the source table and applies a row only if the source value is still the one
the key was computed from (compared with a binary collation; trailing spaces,
which never change a key, aside); one ``DELETE … JOIN`` removes a
row only if the source now says it must not exist (record gone or deleted,
column empty).  In REPEATABLE READ both statements read the source rows with
shared locks, so the source row cannot change between that check and the write:
a user's update either committed before (the check fails, the trigger's row
stays) or waits for the batch to commit (its trigger then overwrites).
Nothing is truncated or swapped, so no trigger write is ever lost.
"""
import logging
import random
from contextlib import contextmanager
from typing import NamedTuple

from sqlalchemy import bindparam, exc as sa_exc, select, text

from . import phone, triggers
from .dialect.mysql import LOCK_WAIT_TIMEOUT, DEADLOCK, errno
from .triggers import INDEX_TABLE, MAX_ID_LENGTH, digits_rev

log = logging.getLogger(__name__)

STAGE_TABLE = "crmagi_phone_stage"
ASCII = "CHARACTER SET ascii COLLATE ascii_bin"
_RETRY_ERRORS = (LOCK_WAIT_TIMEOUT, DEADLOCK)     # the batch is simply redone
_ATTEMPTS = 5


class Batch(NamedTuple):
    rows: list          # (id, deleted, *phones) of the source table, by id
    existing: dict      # (record_id, field) -> (digits_rev, e164, national, parsed)


LOCK_WAIT = ("SET SESSION innodb_lock_wait_timeout = 10", "SET SESSION innodb_lock_wait_timeout = DEFAULT")


@contextmanager
def session(engine, lock_wait=LOCK_WAIT):
    """One connection in REPEATABLE READ: the conditional writes must read the source rows
    with shared locks (InnoDB does so for INSERT/DELETE … SELECT above READ COMMITTED).
    ``lock_wait``: the statements setting a 10 s lock wait and restoring the default."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn.exec_driver_sql(lock_wait[0])
        try:
            yield conn
        finally:
            conn.rollback()
            conn.exec_driver_sql(lock_wait[1])
            conn.commit()


@contextmanager
def transaction(conn):
    """Commit (or roll back) what the block did on this connection."""
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def table_exists(conn, name):
    return conn.execute(text("SELECT COUNT(*) FROM information_schema.TABLES"
                             " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :n"), {"n": name}).scalar() > 0


def expanding(name):
    return bindparam(name, expanding=True)


class Sync:
    """Batches of one configured module, and what to do about them."""

    def __init__(self, conn, rules, batch_size, id_collation=""):
        self.conn = conn
        self.rules = rules
        self.batch_size = batch_size
        self.id_collation = id_collation     # of record_id, as in the CRM's id columns

    # -- reading -------------------------------------------------------------------

    def batches(self, spec, table, start=None, limit=None):
        """Source rows by id, each with the index rows of its id range (the last range is open)."""
        conn, size = self.conn, limit or self.batch_size
        columns = [table.c.id, table.c.deleted] + [table.c[f] for f in spec.phone_fields]
        last = start
        while True:
            with transaction(conn):          # one snapshot for both reads
                stmt = select(*columns).order_by(table.c.id).limit(size)
                if last is not None:
                    stmt = stmt.where(table.c.id > last)
                rows = conn.execute(stmt).all()
                high = rows[-1][0] if rows and (len(rows) == size or limit) else None
                where, params = ["module = :m"], {"m": spec.name}
                if last is not None:
                    where.append("record_id > :lo")
                    params["lo"] = last
                if high is not None:
                    where.append("record_id <= :hi")
                    params["hi"] = high
                existing = self._existing(" AND ".join(where), params)
            yield Batch(rows, existing)
            if high is None or limit:
                return
            last = high

    def _existing(self, where, params, bind=None):
        stmt = text("SELECT record_id, field, digits_rev, e164, national, parsed FROM %s WHERE %s"
                    % (INDEX_TABLE, where))
        if bind:
            stmt = stmt.bindparams(expanding(bind))
        return {(r[0], r[1]): tuple(r[2:]) for r in self.conn.execute(stmt, params)}

    @staticmethod
    def desired(spec, rows):
        """(record_id, field) -> (digits_rev, value): what the index must hold for these rows."""
        found = {}
        for row in rows:
            if row[1] != 0:
                continue
            for field, value in zip(spec.phone_fields, row[2:]):
                key = digits_rev(value)
                if key:
                    found[(row[0], field)] = (key, value)
        return found

    # -- rebuild -------------------------------------------------------------------

    def _new_stage(self):
        """An empty staging table for one batch.  Created anew each time: InnoDB does not purge
        a temporary table's deleted rows, so a DELETE-and-refill stage slows every batch down,
        and TRUNCATE would commit the batch's transaction."""
        self.drop_stage()
        self.conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE `%s` (record_id VARCHAR(%d) %s NOT NULL,"
            " field VARCHAR(64) %s NOT NULL, value TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,"
            " digits_rev VARCHAR(32) %s NULL, e164 VARCHAR(16) %s NULL, national VARCHAR(32) %s NULL,"
            " PRIMARY KEY (record_id, field)) ENGINE=InnoDB"
            % (STAGE_TABLE, MAX_ID_LENGTH, self.id_collation, ASCII, ASCII, ASCII, ASCII))

    def drop_stage(self):
        self.conn.exec_driver_sql("DROP TEMPORARY TABLE IF EXISTS `%s`" % STAGE_TABLE)

    def apply(self, spec, batch, full):
        """Write what differs in this batch: (rows written, rows deleted)."""
        desired = self.desired(spec, batch.rows)
        writes = []
        for (record_id, field), (key, value) in desired.items():
            have = batch.existing.get((record_id, field))
            if full or have is None or have[0] != key or not have[3]:
                parsed = phone.parse(value, self.rules.default_region)
                writes.append((record_id, field, value, key,
                               parsed.e164 if parsed else None, parsed.national if parsed else None))
        extras = [(record_id, field, None, None, None, None)
                  for record_id, field in batch.existing if (record_id, field) not in desired]
        if not writes and not extras:
            return 0, 0
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with transaction(self.conn):
                    return self._write(spec, writes, extras)
            except sa_exc.OperationalError as exc:
                if errno(exc) not in _RETRY_ERRORS or attempt == _ATTEMPTS:
                    raise
                log.info("rebuild batch of %s: %s; retrying", spec.name, exc.orig)

    def _write(self, spec, writes, extras):
        """Apply a batch; each row only if the source row still says so (read under a shared lock)."""
        conn = self.conn
        self._new_stage()
        conn.exec_driver_sql("INSERT INTO `%s` (record_id, field, value, digits_rev, e164, national)"
                             " VALUES (%%s, %%s, %%s, %%s, %%s, %%s)" % STAGE_TABLE, writes + extras)
        current = "CASE s.field %s END" % " ".join("WHEN '%s' THEN t.`%s`" % (f, f) for f in spec.phone_fields)
        names = dict(idx=INDEX_TABLE, stage=STAGE_TABLE, table=spec.table, current=current,
                     fields=", ".join("'%s'" % f for f in spec.phone_fields),
                     digits=triggers.sql_digits_rev(current))
        deleted = 0
        if writes:
            conn.exec_driver_sql(
                "INSERT INTO `{idx}` (module, record_id, field, digits_rev, e164, national, parsed)"
                " SELECT STRAIGHT_JOIN %s, s.record_id, s.field, s.digits_rev, s.e164, s.national, 1"
                " FROM `{stage}` s JOIN `{table}` t ON t.id = s.record_id"
                " WHERE s.value IS NOT NULL AND t.deleted = 0"
                " AND CONVERT({current} USING utf8mb4) COLLATE utf8mb4_bin = s.value"
                " ON DUPLICATE KEY UPDATE digits_rev = VALUES(digits_rev), e164 = VALUES(e164),"
                " national = VALUES(national), parsed = 1".format(**names), (spec.name,))
        if extras:
            deleted = conn.exec_driver_sql(
                "DELETE i FROM `{stage}` s STRAIGHT_JOIN `{idx}` i"
                " ON i.module = %s AND i.record_id = s.record_id AND i.field = s.field"
                " LEFT JOIN `{table}` t ON t.id = s.record_id"
                " WHERE s.value IS NULL AND (t.id IS NULL OR COALESCE(t.deleted, 1) <> 0"
                " OR s.field NOT IN ({fields}) OR COALESCE({digits}, '') = '')".format(**names),
                (spec.name,)).rowcount
        return len(writes), deleted

    def drop_unconfigured(self):
        """Rows of modules no longer configured (fields no longer configured go batch by batch)."""
        names = ", ".join("'%s'" % triggers.check_name("module", spec.name) for spec in self.rules.modules)
        deleted = 0
        while True:
            with transaction(self.conn):
                count = self.conn.exec_driver_sql("DELETE FROM `%s` WHERE module NOT IN (%s) LIMIT 5000"
                                                  % (INDEX_TABLE, names)).rowcount
            deleted += count
            if count < 5000:
                return deleted

    # -- check ---------------------------------------------------------------------

    def check(self, tables, sample=None, limit=100):
        problems = []
        for spec in self.rules.modules:
            table = tables[spec.table]
            start = "%08x" % random.getrandbits(32) if sample else None
            for batch in self.batches(spec, table, start=start, limit=sample):
                suspects = {key for key, _ in self.diff(spec, batch)}
                if suspects:      # read again: an edit racing the check is no disagreement
                    again = self._reread(spec, table, suspects)
                    problems += [message for key, message in self.diff(spec, again) if key in suspects]
                if len(problems) > limit:
                    break
        with transaction(self.conn):
            others = self.conn.execute(
                text("SELECT module, COUNT(*) FROM %s WHERE module NOT IN :names GROUP BY module"
                     % INDEX_TABLE).bindparams(expanding("names")),
                {"names": [spec.name for spec in self.rules.modules]}).all()
        problems += ["%s: %d row(s) of a module that is not configured (run `crmagi index rebuild`)"
                     % (module, count) for module, count in others]
        if len(problems) > limit:
            problems = problems[:limit] + ["... more disagreements not shown"]
        return problems

    def _reread(self, spec, table, keys):
        ids = sorted({record_id for record_id, _ in keys})
        columns = [table.c.id, table.c.deleted] + [table.c[f] for f in spec.phone_fields]
        with transaction(self.conn):
            rows = self.conn.execute(select(*columns).where(table.c.id.in_(ids))).all()
            existing = self._existing("module = :m AND record_id IN :ids", {"m": spec.name, "ids": ids}, "ids")
        return Batch(rows, existing)

    def diff(self, spec, batch):
        """[((record_id, field), message)] where the index and the source rows disagree."""
        desired = self.desired(spec, batch.rows)
        alive = {row[0] for row in batch.rows if row[1] == 0}
        found = []
        for key in sorted(set(desired) | set(batch.existing)):
            want, have = desired.get(key), batch.existing.get(key)
            if want and have and want[0] == have[0]:
                continue
            record_id, field = key
            label = "%s %s %s" % (spec.name, record_id, field)
            if have is None:
                found.append((key, "%s: missing (the table has %r)" % (label, want[1])))
            elif want is None:
                why = ("column not configured" if field not in spec.phone_fields
                       else "record deleted or gone" if record_id not in alive else "no digits in the column")
                found.append((key, "%s: extra row (%s)" % (label, why)))
            else:
                found.append((key, "%s: digits_rev %r, but %r gives %r" % (label, have[0], want[1], want[0])))
        return found
