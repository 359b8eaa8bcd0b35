"""Group commit: the write transactions of several calls as ONE database transaction (issue #12).

Each call's start is one packet of INSERTs and a COMMIT, each finish a locked read and one more
packet, each live update (AMI) one packet of its lock, its writes and a COMMIT.  Per
transaction MariaDB parses a packet, commits (one redo-log flush with
``innodb_flush_log_at_trx_commit = 1``) and sends a result per statement, and PyMySQL parses
each result in Python: measured on the bench database, ten starts in one transaction cost
MariaDB 163 us and crmagi 173 us each, against 295 and 365 us one by one.

No op waits for company.  While a lane (``[crm] write_lanes``) is free, ``run`` writes its op
at once, alone, as before.  Only while every lane has a transaction in flight do ops queue, and
the next free lane takes all that queued (up to ``MAX_OPS``) as one transaction: their reads in
one packet, then every op's writes and the COMMIT in another.  So an idle box writes each op
alone, and a busy one writes more ops per round trip the busier it gets.

One op's failure is not the others': when a shared transaction fails on a statement (a
duplicate start, a deadlock, a value the column refuses), it is rolled back and each of its ops
runs again alone, each getting its own result or error.  Only a lost connection, which would
fail them all again, is given to every op at once.  Ops that lock the same rows (a call id, a
missed-call number) never share a transaction: the later one waits for the next.
"""
import time
from contextlib import contextmanager
from typing import Callable, Hashable, List, NamedTuple, Sequence, Tuple

import gevent
from gevent.event import AsyncResult
from sqlalchemy.exc import TimeoutError as PoolTimeout

from . import sqlbatch
from .db import CrmUnavailable
from .dialect.mysql import errno

MIN_READ = 0.05         # seconds: the least read timeout a shared transaction gets
MAX_OPS = 50            # ops per shared transaction: one packet stays well under max_allowed_packet
_CLIENT_ERRORS = range(2000, 3000)      # the driver's own errors: no server, connection lost


class Op(NamedTuple):
    """One call's transaction.  ``reads``: (sql, params) SELECTs run first, locking; ``write``:
    given their rows (one list per read), the (sql, params) statements to commit and the op's
    result (no statements: the result alone, nothing written).  ``keys``: the rows it locks or
    changes; two ops sharing a key never share a transaction.  ``probe``: the op's result is
    the rows of its first statement instead (a locking SELECT sent with its writes: a live
    update, whose statements hold their own conditions, stays one round trip)."""
    keys: Tuple[Hashable, ...]
    reads: Sequence[tuple]
    write: Callable[[List[list]], Tuple[list, object]]
    probe: bool = False


def execute(engine, ops, within=None):
    """Run ``ops`` as one transaction on a pooled connection; their results, in order.  At most
    two round trips on MariaDB whatever their number: the reads, then the writes and COMMIT.
    Raises the driver's error (everything rolled back) when any statement fails.  ``within``:
    seconds each read of the server's answers may take, if less than the driver's timeout."""
    with sqlbatch.transaction(engine) as tx, _read_limit(tx, within):
        reads = [read for op in ops for read in op.reads]
        sets = tx.read_sets(reads) if reads else []
        statements, results, probes, at = [], [], [], 0
        for op in ops:
            more, result = op.write(sets[at:at + len(op.reads)])
            at += len(op.reads)
            if op.probe:
                probes.append((len(results), len(statements)))
            statements += more
            results.append(result)
        if len(ops) == 1:
            first = tx.commit(statements) if statements else []
            probed = [first]
        else:       # shared (MariaDB/MySQL only): every statement's rows, for the probes
            probed = tx.commit_sets(statements) if statements else []
        for index, at in probes:
            results[index] = probed[at]
    return results


@contextmanager
def _read_limit(tx, seconds):
    """PyMySQL's read timeout lowered to ``seconds`` for one transaction: it applies
    ``_read_timeout`` to its socket before reading each packet, and on expiry closes the
    connection (error 2013), as on its own timeout."""
    conn = getattr(tx.raw, "driver_connection", None) if seconds is not None else None
    saved = getattr(conn, "_read_timeout", None)
    if not saved:
        yield
        return
    conn._read_timeout = max(MIN_READ, min(saved, seconds))
    try:
        yield
    finally:
        conn._read_timeout = saved


def shared_by_all(exc):
    """Whether the error of a shared transaction would be every op's alone: no connection
    (the driver's own errors, the pool's timeout), not one op's statement.  Any other error
    may be one op's, so each op is tried again alone."""
    return errno(exc) in _CLIENT_ERRORS or isinstance(exc, PoolTimeout)


class GroupCommit:
    """``run(op)`` -> the op's result, written alone or in a transaction shared with other
    calls' ops; raises what the op would raise alone.  ``lanes`` 0: every op alone, now."""

    def __init__(self, engine, lanes=2, wait=5.0):
        self.engine = engine
        self.lanes = lanes
        # Seconds an op may wait for a lane ([crm] query_timeout).  Unbounded, ops queued behind
        # hung transactions (a table locked) outlived the writer's timeout without having
        # begun, and a crash then left their spool entries held for a minute (CallWriter).
        self.wait = wait
        # Transactions tried and the ops they held (shared ones that failed, then each op
        # alone, count too): the metrics' ops per transaction.  Plain ints: read when scraped.
        self.transactions = self.ops = 0
        self._queue = []            # (op, AsyncResult, deadline) in arrival order
        self._busy = 0              # lanes with a transaction in flight
        self._scheduled = False     # a dispatch is due at the end of this tick

    def run(self, op):
        if self.lanes <= 0:
            return self._execute([op])[0]
        if self._busy < self.lanes and not self._queue:
            # A lane is free: this op is its transaction, in the caller's greenlet (no
            # greenlet or waiter of its own: the usual case below saturation).
            self._busy += 1
            try:
                return self._execute([op])[0]
            finally:
                self._busy -= 1
                self._dispatch()
        waiter = AsyncResult()
        self._queue.append((op, waiter, time.monotonic() + self.wait))
        if not self._scheduled and self._busy < self.lanes:
            self._scheduled = True
            gevent.get_hub().loop.run_callback(self._dispatch)
        try:
            return waiter.get(timeout=self.wait)
        except gevent.Timeout:
            if not self._withdraw(waiter):
                return waiter.get()     # in a transaction by now: its driver's timeout bounds it
            raise CrmUnavailable("CRM database: a write waited %.3gs for one of %d transaction(s) in flight"
                                 % (self.wait, self.lanes)) from None

    def _withdraw(self, waiter):
        """Take a queued op out of the queue; False once a lane has taken it."""
        for at, (_, queued, _) in enumerate(self._queue):
            if queued is waiter:
                del self._queue[at]
                return True
        return False

    def _dispatch(self):
        self._scheduled = False
        while self._queue and self._busy < self.lanes:
            batch = self._take()
            self._busy += 1
            gevent.spawn(self._lane, batch)

    def _take(self):
        """The oldest queued ops that share no key, up to MAX_OPS; the rest stay queued in order."""
        batch, keys, left = [], set(), []
        for item in self._queue:
            op_keys = item[0].keys
            if len(batch) < MAX_OPS and keys.isdisjoint(op_keys):
                batch.append(item)
                keys.update(op_keys)
            else:
                left.append(item)
        self._queue = left
        # Rows locked in one order by every shared transaction: fewer deadlocks between lanes
        # and workers (the AMI worker's live updates lock crmagi_calls rows too).
        batch.sort(key=lambda item: item[0].keys)
        return batch

    def _lane(self, batch):
        """One shared transaction.  It must end by the earliest deadline of its ops: an op's
        write ends within ``wait`` of its start, queued or not, as a write of its own ends on
        the driver's timeout (CallWriter relies on it: a write still running past its timeout
        holds its call's spool entry, for a minute after a crash)."""
        try:
            within = min(deadline for _, _, deadline in batch) - time.monotonic()
            try:
                results = self._execute([op for op, _, _ in batch], within)
            except Exception as exc:    # noqa: BLE001 - handed to the ops' callers
                if len(batch) == 1 or shared_by_all(exc):
                    for _, waiter, _ in batch:
                        waiter.set_exception(exc)
                else:
                    self._alone(batch)
                return
            for (_, waiter, _), result in zip(batch, results):
                waiter.set(result)
        finally:
            self._busy -= 1
            self._dispatch()

    def _execute(self, ops, within=None):
        self.transactions += 1
        self.ops += len(ops)
        return execute(self.engine, ops, within)

    def _alone(self, batch):
        """After a shared transaction failed on a statement: each op in a transaction of its
        own, side by side, so that the failing one's error stays its own."""
        gevent.joinall([gevent.spawn(self._one, *item) for item in batch])

    def _one(self, op, waiter, deadline):
        try:
            waiter.set(self._execute([op], deadline - time.monotonic())[0])
        except Exception as exc:    # noqa: BLE001 - handed to the op's caller
            waiter.set_exception(exc)
