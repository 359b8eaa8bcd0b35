"""A durable local queue of call writes the CRM database could not take in time.

An AGI handler must never wait on a slow or dead CRM: ``CallWriter.submit`` tries
the write for a short while, and otherwise parks the op in an sqlite file that
survives a crash (WAL + synchronous=FULL) and is replayed oldest first.  Replays
are safe because CallStore's writes are idempotent and commutative.
"""
import json
import logging
import os
import sqlite3
import threading
import time

import gevent
from gevent.event import Event

from .models import CallRecord, LiveUpdate

KINDS = ("start", "finish", "live")

_SCHEMA = """CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created REAL NOT NULL)"""


class Spool:
    """sqlite-backed FIFO.  One connection behind a lock: under gevent the lock is
    a cooperative one, and sqlite calls are short local-disk writes."""

    def __init__(self, path):
        self.path = str(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit (isolation_level=None): every statement is its own durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)

    def push(self, kind, payload):
        text = json.dumps(payload, sort_keys=True)
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO ops (kind, payload, attempts, created) VALUES (?, ?, 0, ?)",
                (kind, text, time.time()))
            return cursor.lastrowid

    def peek(self, limit=100):
        """The oldest ``limit`` ops as ``(id, kind, payload dict)``, without removing them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, payload FROM ops ORDER BY id LIMIT ?", (int(limit),)).fetchall()
        return [(op_id, kind, json.loads(payload)) for op_id, kind, payload in rows]

    def delete(self, op_id):
        with self._lock:
            self._db.execute("DELETE FROM ops WHERE id = ?", (op_id,))

    def bump(self, op_id, error):
        with self._lock:
            self._db.execute("UPDATE ops SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                             (str(error)[:2000], op_id))

    def attempts(self, op_id):
        """``(attempts, last_error)`` of one op, or None when it is gone."""
        with self._lock:
            row = self._db.execute("SELECT attempts, last_error FROM ops WHERE id = ?",
                                   (op_id,)).fetchone()
        return row

    def __len__(self):
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM ops").fetchone()[0]

    def close(self):
        with self._lock:
            self._db.close()

    def stats(self):
        """pending, dead, oldest_age (s or None), size_bytes, full: a stand-in until the
        dead-letter spool on main provides the real one with these attributes."""
        from types import SimpleNamespace

        with self._lock:
            pending, oldest = self._db.execute("SELECT COUNT(*), MIN(created) FROM ops").fetchone()
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = 0
        age = None if oldest is None else max(0.0, time.time() - oldest)
        return SimpleNamespace(pending=pending, dead=0, oldest_age=age, size_bytes=size, full=False)


class CallWriter:
    """Writes CallRecords through a CallStore, falling back to the Spool; never raises."""

    def __init__(self, store, spool, timeout=0.5, flush_interval=5.0,
                 log=logging.getLogger("crmsync.writer"), live=None, on_write=None):
        self.store = store
        # on_write(via, ok): metrics of each write, via "direct" (submit) or "spool" (replay)
        self.on_write = on_write or (lambda via, ok: None)
        self.live = live        # crmsync.livecalls.LiveCalls, for "live" ops
        self.spool = spool
        self.timeout = timeout
        self.flush_interval = flush_interval
        self.log = log
        self._flushing = threading.Lock()
        self._stopping = Event()
        self._flusher = None
        self._down = False      # inside a failure streak: log the first failure only

    def submit_live(self, change):
        """A live update (AMI): applied now, or spooled behind a pending start; never raises.

        With nothing spooled, an update for a call that has no row is not a crmagi call
        (internal, ignored, never reached the AGI) and is dropped."""
        if self.live is None:
            return False
        if len(self.spool):
            self.spool.push("live", change.to_json())
            return False
        return self.submit("live", change)

    def submit(self, kind, rec):
        """Write now if the CRM answers within ``timeout``; otherwise spool.  True = written."""
        try:
            if kind not in KINDS:
                raise ValueError("unknown call op %r" % (kind,))
            # The write runs in its own greenlet so a hung database costs the caller at
            # most ``timeout``.  Left running, it may still finish later: harmless, since
            # the spooled copy then replays as a no-op.
            worker = gevent.spawn(self._attempt, kind, rec)
            worker.join(self.timeout)
            error = worker.value if worker.ready() else "timed out after %.2fs" % self.timeout
            self.on_write("direct", error is None)
            if error is None:
                self._up()
                return True
            self._failed("%s %s" % (kind, rec.call_id), error)
            self.spool.push(kind, rec.to_json())
            self.log.debug("spooled %s of call %s: %s", kind, rec.call_id, error)
        except Exception:   # noqa: BLE001 - a call must go on whatever happens here
            self.log.exception("could not record %s of call %s", kind,
                               getattr(rec, "call_id", "?"))
        return False

    def flush(self):
        """Apply spooled ops oldest first; stop at the first failure.  Returns ops applied."""
        if not self._flushing.acquire(blocking=False):
            return 0        # another greenlet is flushing already
        applied = 0
        try:
            while True:
                batch = self.spool.peek(50)
                if not batch:
                    return applied
                for op_id, kind, payload in batch:
                    try:
                        if kind not in KINDS:
                            raise ValueError("unknown call op %r" % (kind,))
                        rec = (LiveUpdate if kind == "live" else CallRecord).from_json(payload)
                    except (TypeError, ValueError, KeyError) as exc:
                        # Undecodable: it can never apply, and would block every op behind it.
                        self.log.error("dropping undecodable spooled op %s (%s): %s %r",
                                       op_id, exc, kind, payload)
                        self.spool.delete(op_id)
                        continue
                    error = self._attempt(kind, rec)
                    self.on_write("spool", error is None)
                    if error is not None:
                        self.spool.bump(op_id, error)
                        self._failed("replay of %s %s" % (kind, rec.call_id), error)
                        return applied
                    self.spool.delete(op_id)
                    applied += 1
                    self._up()
        except Exception:   # noqa: BLE001 - e.g. the spool's disk; retried next round
            self.log.exception("spool flush failed")
            return applied
        finally:
            self._flushing.release()

    def pending(self):
        return len(self.spool)

    def start(self):
        """Flush every ``flush_interval`` seconds in a background greenlet."""
        if self._flusher is None or self._flusher.dead:
            self._stopping.clear()
            self._flusher = gevent.spawn(self._run)
        return self

    def stop(self, timeout=10.0):
        """Stop the flusher (letting a running flush end), then flush one last time."""
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join(timeout)
            self._flusher.kill()
            self._flusher = None
        self.flush()

    def _run(self):
        while not self._stopping.wait(self.flush_interval):
            self.flush()

    def _attempt(self, kind, rec):
        """None on success, else the error; never raises (a raising greenlet would be
        reported by the hub even after submit has given up on it)."""
        try:
            if kind == "start":
                self.store.start(rec)
            elif kind == "finish":
                self.store.finish(rec)
            elif kind == "live" and self.live is not None:
                self.live.apply(rec)        # False (no such call) is final, not an error
            else:
                return "unknown call op %r" % (kind,)
            return None
        except Exception as exc:    # noqa: BLE001 - reported to the caller as a value
            return exc

    def _failed(self, what, error):
        if not self._down:
            self._down = True
            self.log.warning("CRM write failed (%s): %s; spooling until it recovers", what, error)

    def _up(self):
        if self._down:
            self._down = False
            self.log.info("CRM writes work again; %d op(s) still spooled", len(self.spool))
