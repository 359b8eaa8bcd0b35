"""A durable local queue of call writes the CRM database could not take in time.

The file survives a crash (WAL; every op kept for replay is committed with
synchronous=FULL, the write-ahead entries of writes in flight without fsync).  Order matters only within one
call (its start, live updates, finish), so the queue hands out the oldest op of each
call, and a call whose op keeps failing holds back only its own later ops.  An op
that can never apply (a dropped column, a value strict mode refuses) is moved, after
a bounded number of attempts, to the ``dead`` table of the same file with its last
error, where ``crmagi spool list|retry|drop`` shows and acts on it.  Nothing is
ever deleted without being applied, except by an explicit ``drop``.
"""
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Optional

import gevent
from gevent import monkey

log = logging.getLogger(__name__)

_COLUMNS = """kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    call_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created REAL NOT NULL"""
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ops (id INTEGER PRIMARY KEY AUTOINCREMENT, %s)" % _COLUMNS,
    "CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY, %s, died REAL NOT NULL)" % _COLUMNS,
)
# Added after the first release: older spool files get them on open.
_ADDED = (("ops", "call_id", "TEXT"), ("ops", "retry_at", "REAL NOT NULL DEFAULT 0"))
_INDEX = "CREATE INDEX IF NOT EXISTS ops_call ON ops (call_id, id)"
_FIELDS = "id, kind, payload, call_id, attempts, last_error, created"
_IN_FLIGHT = "(last_error IS NULL AND retry_at > ?)"     # a write-ahead entry within its hold
# A write-ahead entry or its delete writes 2-3 WAL pages: 300 of them are about sqlite's own
# 1,000-page mark (wal_autocheckpoint's default).  The WAL holds at most the pages of 300 commits
# (more when they are large, e.g. a push_many of a backlog) plus what a reader kept from the last
# checkpoint (the CLI's, briefly): the next one takes it.
CHECKPOINT_COMMITS = 300


def _off_loop(func, *args):
    """Run a write whose commit waits for fsync in one of gevent's native threads when
    threads are gevent's (crmagi serve): sqlite releases the GIL while the disk syncs, so the
    event loop -- every other call -- goes on meanwhile.  Before, gevent's monitor saw
    the loop blocked over 20 ms by these fsyncs 16 times in 10 s at 30 calls/s.  The caller holds the spool lock,
    so the connection is still used by one thread at a time."""
    if monkey.is_module_patched("threading"):
        result = gevent.get_hub().threadpool.spawn(func, *args)
        try:
            return result.get()
        except BaseException:
            # Killed while waiting (a stop): the thread still uses the connection, and the
            # caller's lock must not be released under it.
            result.wait()
            raise
    return func(*args)


@dataclass(frozen=True)
class Op:
    id: int
    kind: str
    payload: str            # JSON text; decoded by the writer, which owns what it means
    call_id: Optional[str]
    attempts: int
    last_error: Optional[str]
    created: float
    died: Optional[float] = None


@dataclass(frozen=True)
class SpoolStats:
    pending: int
    dead: int
    oldest_age: Optional[float]     # seconds the oldest pending op has waited
    size_bytes: int
    full: bool                      # past the configured bound: alarm, never a drop
    in_flight: int = 0              # written ahead, being tried right now


def _call_id(payload):
    value = payload.get("call_id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


_INSERT = "INSERT INTO ops (kind, payload, call_id, created, retry_at) VALUES (?, ?, ?, ?, ?)"


def _row(kind, payload, chain, created, retry_at):
    """An op's values for _INSERT: the payload as JSON text, queued in ``chain`` or its call's."""
    return kind, json.dumps(payload, sort_keys=True), chain or _call_id(payload), created, retry_at


def awaiting(call_id):
    """The chain of a call's live updates that wait for its row (``LiveUpdate.awaited``): apart
    from the call's own chain, so they never hold up the start that makes the row."""
    return "awaiting-row:%s" % call_id


class Spool:
    """sqlite-backed queue.  One connection behind a lock: under gevent the lock is a
    cooperative one; reads and the write-ahead entries (no fsync) are short local-disk
    work on the loop, durable writes and WAL checkpoints run in a native thread (``_off_loop``)."""

    def __init__(self, path, max_bytes=0):
        self.path = str(path)
        self.max_bytes = max_bytes          # 0: unbounded
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit (isolation_level=None): every statement is its own durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._migrate()
        # At rest NORMAL (WAL without fsync: survives a crash of this process, kill -9, not a
        # power cut): the hot path's write-ahead entries and their deletes are one statement
        # each, not three.  Every durable write switches to FULL around itself (``_durably``).
        self._db.execute("PRAGMA synchronous=NORMAL")
        # No checkpoint inside a commit: sqlite's automatic one (every 1,000 WAL pages) runs in
        # whichever commit crosses the mark, with two fsyncs at synchronous=NORMAL, and that
        # commit is usually a write-ahead entry on the event loop (1-5 ms stalls, about one a
        # second per worker at 200 calls/s).  ``_run`` runs one in a native thread instead.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._commits = 0

    def _migrate(self):
        present = {row[1] for row in self._db.execute("PRAGMA table_info(ops)")}
        for table, column, kind in _ADDED:
            if column not in present:
                self._db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, kind))
        self._db.execute("UPDATE ops SET call_id = json_extract(payload, '$.call_id') "
                         "WHERE call_id IS NULL AND json_valid(payload)")
        self._db.execute(_INDEX)

    def _run(self, sql, args=(), fsync=True):
        with self._lock:
            if fsync:
                return _off_loop(self._durably, self._db.execute, sql, args)
            if self._checkpoint_due():
                return _off_loop(self._after_checkpoint, self._db.execute, sql, args)
            return self._db.execute(sql, args)

    def _checkpoint_due(self):
        """Every CHECKPOINT_COMMITS commits, the next one goes to a native thread after a
        checkpoint (``_after_checkpoint``)."""
        self._commits += 1
        if self._commits < CHECKPOINT_COMMITS:
            return False
        self._commits = 0
        return True

    def _after_checkpoint(self, func, *args):
        """A PASSIVE checkpoint (it never waits for a reader, the CLI's), then ``func``: its
        commit is the one that restarts the WAL from its start and syncs the new WAL header,
        so that sync is off the loop too.  The caller holds the lock, so no commit lands during
        the checkpoint: one on a second connection beside the writes was tried, and under
        steady writes it never found the WAL fully copied, so the WAL never restarted (618 MB
        after 60,000 commits)."""
        self._checkpoint()
        return func(*args)

    def _checkpoint(self):
        """A failed checkpoint is logged, not raised: the next one takes the pages this one left."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("spool %s: WAL checkpoint failed: %s", self.path, exc)

    def _durably(self, func, *args):
        """func's commit waits for fsync (synchronous=FULL); the caller holds the lock."""
        if self._checkpoint_due():      # in a native thread already (or the CLI: retry, drop)
            self._checkpoint()
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            return func(*args)
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _in_transaction(self, func):
        """``func()`` as one transaction on this autocommit connection: all or nothing.  A
        failed COMMIT is rolled back too: a connection left inside a transaction would take
        the next statements into it, uncommitted, and refuse ``_durably``'s PRAGMA."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = func()
            self._db.execute("COMMIT")
            return result
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _read(self, sql, args=()):
        with self._lock:
            return self._db.execute(sql, args)

    # -- the queue ---------------------------------------------------------------

    def push(self, kind, payload, retry_at=0.0, fsync=True, chain=None):
        """Queue an op at the end of its ``chain`` (default: its call, ``payload["call_id"]``)."""
        return self._run(_INSERT, _row(kind, payload, chain, time.time(), retry_at), fsync).lastrowid

    def push_many(self, ops):
        """Queue ``(kind, payload, chain)`` ops in one durable transaction (one fsync), in
        order: a backlog the caller must not hold in memory."""
        created = time.time()
        rows = [_row(kind, payload, chain, created, 0.0) for kind, payload, chain in ops]
        with self._lock:
            _off_loop(self._durably, self._in_transaction, lambda: self._db.executemany(_INSERT, rows))
        return len(rows)

    def push_ahead(self, kind, payload, hold, chain=None):
        """Write-ahead entry of a write about to be tried: durable against a crash of this
        process (no fsync: cheap on the hot path), not picked by a replay for ``hold``
        seconds.  ``forget`` it when the write worked, ``keep`` it when it did not."""
        return self.push(kind, payload, retry_at=time.time() + hold, fsync=False, chain=chain)

    def forget(self, op_id):
        """Drop a write-ahead entry whose write landed (no fsync: losing this delete in a
        power cut only replays an idempotent write)."""
        self._run("DELETE FROM ops WHERE id = ?", (op_id,), fsync=False)

    def keep(self, op_id, error):
        """The write failed: make the entry due for replay; this commit's fsync also makes
        the entry itself safe from a power cut."""
        self._run("UPDATE ops SET last_error = ?, retry_at = 0 WHERE id = ?", (str(error)[:2000], op_id))

    def heads(self, now=None, limit=100):
        """The oldest op of each call, among calls whose head is due, oldest first."""
        rows = self._read(
            "SELECT %s FROM ops o WHERE retry_at <= ? AND (call_id IS NULL OR id = "
            "(SELECT MIN(id) FROM ops p WHERE p.call_id = o.call_id)) ORDER BY id LIMIT ?" % _FIELDS,
            (time.time() if now is None else now, int(limit))).fetchall()
        return [Op(*row) for row in rows]

    def has_call(self, call_id):
        """Whether ops of this call wait: a new op of it must queue behind them."""
        return self._read("SELECT 1 FROM ops WHERE call_id = ? LIMIT 1", (call_id,)).fetchone() is not None

    def asterisk_ids(self):
        """Every linkedid and uniqueid of a call op waiting here or dead: calls crmagi saw
        that the CRM has not taken yet (the CDR backfill must not write them again)."""
        found = set()
        for table in ("ops", "dead"):
            found.update(value for row in self._read(
                "SELECT json_extract(payload, '$.linkedid'), json_extract(payload, '$.uniqueid') FROM %s "
                "WHERE kind IN ('start', 'finish') AND json_valid(payload)" % table) for value in row if value)
        return found

    def has_before(self, chain, op_id):
        """Whether ops of ``chain`` older than ``op_id`` wait (``op_id`` itself aside)."""
        found = self._read("SELECT 1 FROM ops WHERE call_id = ? AND id < ? LIMIT 1", (chain, op_id))
        return found.fetchone() is not None

    def queue(self, op_id):
        """A write-ahead entry becomes a queued op, due now behind its chain's older ones; with
        fsync, as ``push`` would have queued it (it may wait for a CRM outage to end)."""
        self._run("UPDATE ops SET retry_at = 0 WHERE id = ?", (op_id,))

    def make_due(self, chain):
        """Ops of ``chain`` may be tried now (what they waited for happened); False if none."""
        return self._run("UPDATE ops SET retry_at = 0 WHERE call_id = ?", (chain,), fsync=False).rowcount > 0

    def fail(self, op_id, error, retry_at, counted=True):
        """Note a failed attempt; ``counted`` False when the CRM was simply unreachable.
        Returns the number of counted attempts."""
        self._run("UPDATE ops SET attempts = attempts + ?, last_error = ?, retry_at = ? WHERE id = ?",
                  (1 if counted else 0, str(error)[:2000], retry_at, op_id))
        row = self._read("SELECT attempts FROM ops WHERE id = ?", (op_id,)).fetchone()
        return row[0] if row else 0

    def bury(self, op_id, error):
        """Move an op that can never apply to the dead letters, keeping its id and payload."""
        def move():
            self._db.execute("INSERT INTO dead (%s, died) SELECT %s, ? FROM ops WHERE id = ?"
                             % (_FIELDS, _FIELDS.replace("last_error", "?")),
                             (str(error)[:2000], time.time(), op_id))
            self._db.execute("DELETE FROM ops WHERE id = ?", (op_id,))
        with self._lock:
            _off_loop(self._durably, self._in_transaction, move)

    # -- what operators see and do (crmagi spool, crmagi check, /healthz) ----------

    def pending(self, limit=1000):
        return [Op(*row) for row in self._read("SELECT %s FROM ops ORDER BY id LIMIT ?" % _FIELDS,
                                              (int(limit),)).fetchall()]

    def dead(self, limit=1000):
        return [Op(*row) for row in self._read("SELECT %s, died FROM dead ORDER BY id LIMIT ?" % _FIELDS,
                                              (int(limit),)).fetchall()]

    def retry(self, op_id=None):
        """Put one dead op (or all) back in the queue, in its old place; returns how many."""
        where, args = ("WHERE id = ?", (op_id,)) if op_id is not None else ("", ())
        def move():
            moved = self._db.execute("INSERT INTO ops (%s, retry_at) SELECT id, kind, payload, call_id, 0, "
                                     "last_error, created, 0 FROM dead %s" % (_FIELDS, where), args).rowcount
            self._db.execute("DELETE FROM dead %s" % where, args)
            return moved
        with self._lock:
            return self._durably(self._in_transaction, move)

    def drop(self, op_id):
        """Delete one op for good: 'dead', 'pending' or None when there is no such op."""
        def delete():
            for table, name in (("dead", "dead"), ("ops", "pending")):
                if self._db.execute("DELETE FROM %s WHERE id = ?" % table, (op_id,)).rowcount:
                    return name
            return None
        with self._lock:
            return self._durably(delete)

    def stats(self):
        """Counts for operators; a write-ahead entry still within its hold is a write in
        flight, not a write waiting (it is counted apart)."""
        now = time.time()
        with self._lock:
            pending, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created) FROM ops WHERE NOT %s" % _IN_FLIGHT, (now,)).fetchone()
            in_flight = self._db.execute("SELECT COUNT(*) FROM ops WHERE %s" % _IN_FLIGHT, (now,)).fetchone()[0]
            dead = self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]
        size = self.size_bytes()
        return SpoolStats(pending, dead, None if oldest is None else max(0.0, now - oldest), size,
                          bool(self.max_bytes) and size > self.max_bytes, in_flight)

    def size_bytes(self):
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def __len__(self):
        return self._read("SELECT COUNT(*) FROM ops").fetchone()[0]

    def close(self):
        with self._lock:
            self._db.close()
