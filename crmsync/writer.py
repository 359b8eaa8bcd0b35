"""CallWriter: call writes that never hold up a call and are never lost.

An AGI handler must never wait on a slow or dead CRM: ``submit`` tries the write for
a short while, and otherwise parks the op in the Spool, which a background greenlet
replays.  Replays are safe because CallStore's writes are idempotent and commutative.

A failed replay is told apart from an unreachable CRM by a ping: while the CRM is
down nothing counts against an op (an outage of a day must not kill good ops); when
the CRM answers and an op still fails, the attempt counts, the op backs off
exponentially, and after ``max_attempts`` it goes to the dead letters.
"""
import json
import logging
import threading
import time
import weakref

from dataclasses import dataclass
from typing import Optional

import gevent
from gevent.event import Event

from .models import CallRecord, LiveBatch, LiveUpdate
from .spool import awaiting

KINDS = ("start", "finish", "live")
BACKOFF_CAP = 600.0             # seconds: the longest wait between two attempts of one op
FULL_LOG_INTERVAL = 60.0        # seconds between "spool past its bound" errors
AHEAD_MARGIN = 1.0              # seconds a replay leaves a write-ahead entry alone past the timeout
# Seconds a write left running past its timeout holds its call's chain, unless it ends first
# (it always does: the driver's read timeout ends it); only after a crash is this waited out.
LEFTOVER_HOLD = 60.0


def _decode(op):
    """The CallRecord / LiveUpdate of a spooled op; raises ValueError when it has none."""
    if op.kind not in KINDS:
        raise ValueError("unknown call op %r" % (op.kind,))
    try:
        payload = json.loads(op.payload)
        if op.kind != "live":
            return CallRecord.from_json(payload)
        return (LiveBatch if "updates" in payload else LiveUpdate).from_json(payload)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError("undecodable %s op: %s" % (op.kind, exc)) from None


def _chain(kind, rec):
    """Where an op queues: behind its call's ops, or, a live update waiting for its row
    (another worker writes it), in a chain of its own (crmsync.spool.awaiting)."""
    return awaiting(rec.call_id) if kind == "live" and getattr(rec, "awaited", False) else rec.call_id


class NotYet(Exception):
    """A live update of a call crmagi is writing (``LiveUpdate.awaited``) whose row is not there yet."""


@dataclass
class Ticket:
    """An op between ``begin`` (durable) and ``complete`` (tried on the CRM)."""
    kind: str
    rec: object
    op_id: Optional[int] = None     # its write-ahead entry
    queued: bool = False            # behind its call's spooled ops: the flusher applies it
    after: Optional["Flight"] = None    # the op of its call begun before it here, not settled then
    flight: Optional["Flight"] = None   # this op's, until it has settled

    @property
    def durable(self):
        return self.queued or self.op_id is not None


class Flight:
    """An op begun in this process and not settled yet: ``pushed`` once its write-ahead entry
    is written, ``done`` once it is written to the CRM, spooled or left running."""

    def __init__(self):
        self.pushed, self.done = Event(), Event()


class CallWriter:
    """Writes CallRecords through a CallStore, falling back to the Spool; never raises."""

    def __init__(self, store, spool, timeout=0.5, flush_interval=5.0,
                 log=logging.getLogger("crmsync.writer"), live=None, resolve=None, max_attempts=8,
                 on_write=None):
        self.store = store
        # on_write(via, ok): metrics of each write tried, via "direct" (submit) or "spool" (replay)
        self.on_write = on_write or (lambda via, ok: None)
        self.live = live        # crmsync.livecalls.LiveCalls, for "live" ops
        # crmsync.linking.Linker.resolve: fills in, at write time, what the CRM could not
        # tell when the call began (a pending lookup); raises while it still cannot.
        self.resolve = resolve
        self.spool = spool
        self.timeout = timeout
        self.flush_interval = flush_interval
        self.max_attempts = max_attempts
        self.log = log
        self._flushing = threading.Lock()
        self._stopping = Event()
        self._flusher = None
        self._down = False      # inside a failure streak: log the first failure only
        self._full_logged = 0.0
        # chain -> the Flight of its newest op begun here and not settled.  Weak: a ticket
        # never completed (its request failed in between) leaves nothing behind.
        self._flying = weakref.WeakValueDictionary()

    # -- the call path -----------------------------------------------------------

    def submit_live(self, change):
        """A live update (AMI): applied now, or queued behind its call's spooled ops; never raises.

        With nothing spooled for the call, an update for a call that has no row is not a
        crmagi call (internal, ignored, never reached the AGI) and is dropped."""
        if self.live is None:
            return False
        return self.submit("live", change)

    def submit(self, kind, rec):
        """Write now if the CRM answers within ``timeout``; otherwise spool.  True = written."""
        return self.complete(self.begin(kind, rec))

    def begin(self, kind, rec):
        """Make the op durable before anything else happens to it: written ahead, or queued
        behind its call's spooled ops.  ``ticket.durable`` is False only when the spool itself
        failed (logged); ``complete`` then still tries the CRM.  Never raises."""
        chain = flight = None
        try:
            if kind not in KINDS:
                raise ValueError("unknown call op %r" % (kind,))
            chain = _chain(kind, rec)
            ahead = self._flying.get(chain)
            # Registered before the spool is touched (it may yield): an op of this call begun
            # meanwhile waits on this one, and writes its entry after this one's (spool order
            # is begin order).
            flight = self._flying[chain] = Flight()
            if ahead is not None:
                # Not bounded here: that op's begin sets ``pushed`` on every way out, and its
                # spool calls wait in the same lock queue this op's would.
                ahead.pushed.wait()
            elif self.spool.has_call(chain):
                # Ops of one call apply in order: this one waits behind the spooled ones.
                self._spool(kind, rec)
                self._release(chain, flight)
                return Ticket(kind, rec, queued=True)
            # Written ahead: a kill -9 while the CRM is slow must not lose an op that
            # only this process held (Asterisk does not ask again).  Behind an op of its
            # call still being written here (a hangup moments after the answer), it is
            # tried when that op has settled (``_after_ahead``), so it is held twice as long.
            hold = self.timeout * (1 if ahead is None else 2) + AHEAD_MARGIN
            op_id = self.spool.push_ahead(kind, rec.to_json(), chain=chain, hold=hold)
            return Ticket(kind, rec, op_id=op_id, after=ahead, flight=flight)
        except Exception:   # noqa: BLE001 - a call must go on whatever happens here
            if flight is not None:
                self._release(chain, flight)
            self.log.exception("could not spool %s of call %s", kind, getattr(rec, "call_id", "?"))
            return Ticket(kind, rec)
        finally:
            if flight is not None:
                flight.pushed.set()     # also when killed in between: the next op must not wait for ever

    def complete(self, ticket):
        """Try a begun op on the CRM within ``timeout``; True = written.  Never raises."""
        kind, rec = ticket.kind, ticket.rec
        if ticket.queued or kind not in KINDS:
            return False
        try:
            if ticket.after is not None and not self._after_ahead(ticket):
                return False
            # The write runs in its own greenlet so a hung database costs the caller at
            # most ``timeout``.
            worker = gevent.spawn(self._attempt, kind, rec)
            worker.join(self.timeout)
            if worker.ready():
                return self._settle(ticket, worker.value)
            self._left_running(ticket, worker)
        except Exception:   # noqa: BLE001 - a call must go on whatever happens here
            self.log.exception("could not record %s of call %s: %r", kind,
                               getattr(rec, "call_id", "?"), getattr(rec, "__dict__", rec))
        finally:
            self._settled(ticket)
        return False

    def _after_ahead(self, ticket):
        """Wait (at most ``timeout``) for the op of its call begun before it here.  Written:
        this one goes on.  Spooled, left running or not settled: this one queues behind it,
        as ``begin`` would have queued it had that op been spooled already.  Before, such an
        op was pushed with fsync and applied by the flusher: 0.1-0.4 ms more CPU per call
        when every hangup came moments after its answer (bench/load.py --hold 0; README)."""
        settled = ticket.after.done.wait(self.timeout)
        if settled and not self.spool.has_before(_chain(ticket.kind, ticket.rec), ticket.op_id):
            return True
        self.spool.queue(ticket.op_id)
        self._warn_if_full()
        # The op ahead may have been written while an older one (spooled meanwhile: the AMI
        # backlog, an ended call from AstDB) waited: nobody else flushes this chain now.
        gevent.spawn(self.flush)
        return False

    def _settled(self, ticket):
        """The op is done with here: the next op of its call, waiting on it, goes on."""
        if ticket.flight is not None:
            self._release(_chain(ticket.kind, ticket.rec), ticket.flight)

    def _release(self, chain, flight):
        flight.done.set()               # ``pushed`` is set by begin itself, on every way out
        if self._flying.get(chain) is flight:
            del self._flying[chain]

    def _settle(self, ticket, error):
        """After a direct write: forget its write-ahead entry, or make it due for replay."""
        kind, rec = ticket.kind, ticket.rec
        if isinstance(error, NotYet):
            self._not_yet(ticket, error)
            return False
        self.on_write("direct", error is None)
        if error is None:
            if ticket.op_id is not None:
                self.spool.forget(ticket.op_id)
            self._up()
            if (not self._waited_on(ticket) and self.spool.has_call(rec.call_id)) or (
                    kind == "start" and self._row_awaited(rec.call_id)):
                gevent.spawn(self.flush)        # ops of this call queued meanwhile
            return True
        self._failed("%s %s" % (kind, rec.call_id), error)
        if ticket.op_id is not None:
            self.spool.keep(ticket.op_id, error)
            self._warn_if_full()
        else:
            self._spool(kind, rec)
        self.log.debug("spooled %s of call %s: %s", kind, rec.call_id, error)
        return False

    def _waited_on(self, ticket):
        """A later op of its call waits on this one (``_after_ahead``) and tries itself."""
        flight = ticket.flight
        return flight is not None and not flight.done.is_set() and \
            self._flying.get(_chain(ticket.kind, ticket.rec)) not in (None, flight)

    def _left_running(self, ticket, worker):
        """Past ``timeout`` the write goes on in its greenlet and may still commit.  No replay
        may run beside it: committing after the call's later ops, it would undo them (a late
        transfer puts the call back with the wrong user).  Its write-ahead entry, the head of
        the call's chain, stays held until the write ends, then is forgotten or made due.  It
        is counted (``on_write``) then, with how it ended: a late commit is a write that went in."""
        error = "timed out after %.2fs" % self.timeout
        if ticket.op_id is None:        # the spool failed at begin: nothing to hold, spool it now
            self._settle(ticket, error)
            return
        self._failed("%s %s" % (ticket.kind, ticket.rec.call_id), error)
        self.spool.fail(ticket.op_id, error, retry_at=time.time() + LEFTOVER_HOLD, counted=False)
        gevent.spawn(self._after_leftover, ticket, worker)

    def _after_leftover(self, ticket, worker):
        worker.join()
        try:
            self._settle(ticket, worker.value)
        except Exception:   # noqa: BLE001 - the held entry replays after LEFTOVER_HOLD anyway
            self.log.exception("could not settle %s of call %s", ticket.kind, ticket.rec.call_id)

    def _row_awaited(self, call_id):
        """Live updates of this call waited for the row just written: due now.  The read comes
        first so that the usual start, with nothing waiting, writes nothing more to the spool."""
        chain = awaiting(call_id)
        return self.spool.has_call(chain) and self.spool.make_due(chain)

    def _not_yet(self, ticket, error):
        """An awaited live update met no row: the CRM is fine, the row is in flight or spooled
        in another worker.  Try again after ``flush_interval``, backing off like a failed op."""
        retry_at = time.time() + self.flush_interval
        if ticket.op_id is not None:
            self.spool.fail(ticket.op_id, error, retry_at)
        else:
            self._spool(ticket.kind, ticket.rec, retry_at)

    def enqueue(self, kind, rec):
        """Durably queue an op without trying the CRM first (the caller must not wait on
        it); the flusher applies it at once.  Raises when even the spool cannot take it."""
        if kind not in KINDS:
            raise ValueError("unknown call op %r" % (kind,))
        self._spool(kind, rec)
        gevent.spawn(self.flush)

    def shelve_live(self, changes):
        """Live updates of distinct calls, durably queued without trying the CRM, in one spool
        transaction: a backlog the AMI listener must not hold in memory (agi/ami/live.py).  The
        flusher applies them at once, each behind its call's ops.  Raises when the spool
        cannot take them."""
        if self.live is None:
            return
        self.spool.push_many([("live", change.to_json(), _chain("live", change)) for change in changes])
        self._warn_if_full()
        gevent.spawn(self.flush)

    def _spool(self, kind, rec, retry_at=0.0):
        self.spool.push(kind, rec.to_json(), retry_at=retry_at, chain=_chain(kind, rec))
        self._warn_if_full()

    def _warn_if_full(self):
        """Past the bound: an error once a minute (and /healthz fails); nothing is dropped."""
        if self.spool.max_bytes and time.monotonic() - self._full_logged >= FULL_LOG_INTERVAL:
            size = self.spool.size_bytes()
            if size > self.spool.max_bytes:
                self._full_logged = time.monotonic()
                self.log.error("spool %s holds %.1f MB, past [agi] spool_max_mb (%.1f MB): the CRM has "
                               "not taken writes for a long time; nothing is dropped, but the disk fills",
                               self.spool.path, size / 1e6, self.spool.max_bytes / 1e6)

    # -- replays -----------------------------------------------------------------

    def flush(self):
        """Apply due spooled ops, oldest first within each call; returns ops applied."""
        if not self._flushing.acquire(blocking=False):
            return 0        # another greenlet is flushing already
        applied = 0
        try:
            while True:
                done, reachable = self._flush_round()
                applied += done
                if not done or not reachable:
                    return applied
        except Exception:   # noqa: BLE001 - e.g. the spool's disk; retried next round
            self.log.exception("spool flush failed")
            return applied
        finally:
            self._flushing.release()

    def _flush_round(self):
        """One pass over the heads of the calls; (applied, CRM reachable)."""
        applied, held = 0, set()
        for op in self.spool.heads(limit=200):
            if op.call_id in held:
                continue
            try:
                rec = _decode(op)
            except ValueError as exc:
                self._bury(op, exc)
                continue
            error = self._attempt(op.kind, rec)
            if isinstance(error, NotYet):       # not a failure of the CRM: back off quietly
                held.add(op.call_id)
                self._count_failure(op, error)
                continue
            self.on_write("spool", error is None)
            if error is None:
                # No fsync (as a forgotten write-ahead entry): a power cut loses only the newest
                # deletes, so at worst the last ops replay again, idempotent and in order.
                self.spool.forget(op.id)
                applied += 1
                self._up()
                continue
            self._failed("replay of %s %s" % (op.kind, rec.call_id), error)
            if not self._reachable():
                self.spool.fail(op.id, error, retry_at=0, counted=False)
                return applied, False
            held.add(op.call_id)
            self._count_failure(op, error)
        return applied, True

    def _count_failure(self, op, error):
        attempts = op.attempts + 1
        if attempts >= self.max_attempts:
            self._bury(op, error)
            return
        wait = min(BACKOFF_CAP, self.flush_interval * 2 ** (attempts - 1))
        self.spool.fail(op.id, error, retry_at=time.time() + wait)

    def _bury(self, op, error):
        self.spool.bury(op.id, error)
        self.log.error("spooled %s op %s of call %s moved to the dead letters after %d attempt(s): %s "
                       "(see `crmagi spool list`)", op.kind, op.id, op.call_id, op.attempts + 1, error)

    def _reachable(self):
        ping = getattr(self.store, "ping", None)
        if ping is None:
            return True
        try:
            ping()
            return True
        except Exception:   # noqa: BLE001 - any failure of the ping means: not reachable
            return False

    def pending(self):
        return len(self.spool)

    # -- lifecycle ---------------------------------------------------------------

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
        # A flush that a submit spawned may be running: flush() would return at once and
        # the process exit under it, leaving its ops for the next start.  Wait for it.
        if self._flushing.acquire(timeout=timeout):
            self._flushing.release()
        self.flush()

    def _run(self):
        while not self._stopping.wait(self.flush_interval):
            self.flush()
            self._warn_if_full()

    def _attempt(self, kind, rec):
        """None on success, else the error; never raises (a raising greenlet would be
        reported by the hub even after submit has given up on it)."""
        try:
            if self.resolve is not None:
                rec = self.resolve(kind, rec)
            if kind == "start":
                self.store.start(rec)
            elif kind == "finish":
                self.store.finish(rec)
            elif kind == "live" and self.live is not None:
                # False (no such call) is final, unless the call's row is on its way.
                if not self.live.apply(rec) and rec.awaited:
                    return NotYet("call %s has no row yet" % rec.call_id)
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
