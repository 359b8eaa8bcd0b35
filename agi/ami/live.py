"""The AMI listener: AMI events -> the pure call model -> effects on the CRM (and popups).

The AMI reader must never wait on the database, so domain events go through a
queue to one effects greenlet, which keeps their order.  It writes the calls of a batch
side by side; when it falls behind, their updates go to the spool instead (the flusher
writes them, each call's in order), so a backlog costs disk, not memory, and loses nothing.  After every
(re)connect the calls in progress are resynced from CoreShowChannels and the
agents from the Agents list, so a restart of crmagi or Asterisk loses nothing.
"""
import logging
import time

import gevent
from gevent.pool import Pool
from gevent.queue import Full, Queue

from crmlocale.catalogues import phrase
from crmsync.models import LiveBatch, LiveUpdate

from agi.ami import callmodel, originate
from agi.ami.amiclient import AmiClient
from agi.ami.channels import INBOUND, OUTBOUND, is_internal
from agi.fastagi.routes import user_for_extension
from agi.errors import AmiError

log = logging.getLogger("crmagi.live")
BATCH_MAX = 500          # domain events taken from the queue at once (see LivePipeline._effects)
LIVE_WRITERS = 8         # calls of one batch written at once (database connections it may hold)
SHELVE_BACKLOG = 2000    # events behind (~0.5 s at 200 calls/s): the CRM updates go to the spool
BACKLOG_CAP = 200000     # events held at most: reached only when even the spool cannot keep up
SHELVE_LOG_INTERVAL = 60.0
EXPIRE_EVERY = 60.0
RESYNC_TIMEOUT = 10.0    # seconds for each action of the resync: after a reconnect Asterisk is busy
# What the call model reads (agi/ami/callhandlers.py), as whitelist filters for this AMI session:
# Asterisk then sends nothing else (no Newexten, AGIExec*, Cdr, DeviceStateChange, RTCP...).
MODEL_EVENTS = ("AgentCalled", "AgentComplete", "AgentConnect", "AgentLogin", "AgentLogoff",
                "AgentRingNoAnswer", "AttendedTransfer", "BlindTransfer", "BridgeEnter", "BridgeLeave",
                "BridgeMerge", "DialBegin", "DialEnd", "Hangup", "LocalBridge", "MixMonitorStart",
                "Newchannel", "OriginateResponse", "QueueCallerJoin", "QueueCallerLeave",
                "QueueMemberStatus", "Rename", "Shutdown", "FullyBooted")
EVENT_FILTERS = ("Event: (%s)" % "|".join(MODEL_EVENTS),      # a prefix match lets a few extra
                 "Variable: (MIXMONITOR_FILENAME|CRM_DIRECTION|CRM_DID)")   # events in: harmless


class LivePipeline:
    """Feeds the call model and turns its domain events into CRM updates and notifications."""

    def __init__(self, model, directory, writer, call_id_for, system_name="", dids=(), notify=None,
                 clock=time.monotonic, await_rows=False):
        self.model = model
        self.directory = directory
        self.writer = writer
        self.call_id_for = call_id_for
        self.system_name = system_name
        self.dids = {d.number: d for d in dids}
        self.notify = notify or (lambda event: None)
        self.observe = None            # click-to-call progress: sees every AMI event first
        self.clock = clock
        self.await_rows = await_rows
        self.queue = Queue(BACKLOG_CAP)
        self.stats = {"events": 0, "dropped": 0, "shelved": 0}
        self._shelve_logged = 0.0
        self._in_effect = 0             # events of the batch being worked through
        self._closing = False
        self._worker = None
        self._expirer = None

    # -- AMI handler interface (AmiClient finds on_* methods) ---------------
    def on_event(self, message):
        if self.observe is not None:
            try:
                self.observe(message)
            except Exception:
                log.exception("click-to-call progress failed on %s", message.event)
        for event in self.model.feed(message, self.clock()):
            self.enqueue(event, self._awaited(event.linkedid))

    def on_connected(self, client):
        """Resync after every (re)connect: calls in progress, agents and queue members,
        so a restart of crmagi or of Asterisk loses nothing and repeats nothing."""
        try:
            client.filter(EVENT_FILTERS, timeout=RESYNC_TIMEOUT)
        except AmiError as exc:     # every event comes then: more work, nothing missed
            log.warning("AMI Filter not confirmed (%s); the resync goes on", exc)
        try:
            listed = []
            for action in ("Agents", "QueueStatus", "CoreShowChannels"):
                # Events keep arriving while the list is sent: a channel born after this
                # snapshot is not in it, and must not be taken for one that hung up meanwhile.
                known_before = set(self.model.chans)
                _, events = client.action(action, collect=True, timeout=RESYNC_TIMEOUT)
                listed.extend(events)
            for event in self.model.load_channels(listed, self.clock(), known_before):
                self.enqueue(event, self._awaited(event.linkedid))
            log.info("AMI resync: %d listed item(s), %d call(s) in progress", len(listed), len(self.model))
        except AmiError as exc:
            log.warning("AMI resync failed: %s", exc)

    # -- effects -----------------------------------------------------------
    def enqueue(self, event, awaited=False):
        """One domain event for the effects greenlet, in order (the call model's, or the
        plugin API's: agi/plugin/wiring.py); never blocks.  ``awaited``: crmagi writes
        this call's row (see ``_awaited``)."""
        try:
            self.queue.put_nowait((event, awaited))
        except Full:
            self.stats["dropped"] += 1
            log.error("effects queue full (%d events: the spool does not take the backlog either): "
                      "dropping %s", BACKLOG_CAP, type(event).__name__)

    def start(self):
        self._worker = gevent.spawn(self._run)
        if self.model is not None:      # None: the plugin API's pipeline, fed domain events only
            self._expirer = gevent.spawn(self._expire_loop)
        return self

    def stop(self, timeout=5.0):
        """Let the batch in progress end (within ``timeout``), then spool the updates of the
        events still queued: a restart must not lose what the listener had taken in."""
        if self._expirer is not None:
            self._expirer.kill()
        if self._worker is None:
            return
        self._closing = True
        try:
            self.queue.put_nowait(None)         # wakes a worker waiting for events
        except Full:
            pass
        self._worker.join(timeout)
        self._worker.kill()
        rest = [item for item in (self.queue.get_nowait() for _ in range(self.queue.qsize())) if item]
        changes = self._changes(rest, notify=False)     # popups of a stopping process reach nobody
        if changes and not self._shelve(changes):
            log.error("stopping: the live updates of %d call(s) were not written", len(changes))

    def _awaited(self, linkedid):
        """Whether crmagi is writing this call's row although it may not be there yet: with
        [agi] workers > 1 (``await_rows``) the AGI request went to any worker, whose write may
        be in flight or spooled in its own file.  Calls crmagi logs are inbound and outbound
        ones to an outside number; read when the event is fed, while the model holds the call."""
        if not self.await_rows:
            return False
        call = self.model.calls.get(linkedid)
        if call is None:
            return False
        if call.direction == INBOUND:
            return True
        return call.direction == OUTBOUND and bool(call.remote) and not is_internal(call.remote,
                                                                                   self.model.max_digits)

    def _run(self):
        while not self._closing:
            first = self.queue.get()
            if first is None:       # stop()
                continue
            batch = [first]
            while len(batch) < BATCH_MAX and self.queue.qsize():
                item = self.queue.get_nowait()
                if item is not None:
                    batch.append(item)
            self._in_effect = len(batch)
            try:
                self._effects(batch)
            finally:
                self._in_effect = 0

    def pending(self):
        """Domain events not yet through their effects: queued, or taken and in progress."""
        return self.queue.qsize() + self._in_effect

    def _effects(self, batch):
        """Notify each event in order, then write the CRM updates: those of one call that came
        together go as one transaction (a call's answer and its recording come in the same
        burst of events: one round trip and one write-ahead entry less per call)."""
        self._write(self._changes(batch))

    def _changes(self, batch, notify=True):
        """The CRM updates of ``(event, awaited)`` items, one LiveBatch per call, in order."""
        updates = {}            # call id -> its updates, in order
        for event, awaited in batch:
            self.stats["events"] += 1
            try:
                if notify:
                    self.notify(event)
                update = self.update_of(event, awaited)
            except Exception:
                log.exception("effect of %r failed", event)
                continue
            if update is not None:
                updates.setdefault(update.call_id, []).append(update)
        return [LiveBatch.of(grouped) for grouped in updates.values()]

    def _write(self, changes):
        """Each call's updates in one transaction, LIVE_WRITERS calls at once; the next batch
        waits for them all (a call's next updates must not overtake these).  Once the queue is
        SHELVE_BACKLOG events behind, the rest go to the spool in one transaction: the queue
        drains at the spool's speed, popups stay on time, the flusher writes them in order."""
        pool, shelving = Pool(LIVE_WRITERS), True
        for n, change in enumerate(changes):
            pool.wait_available()
            if shelving and self.queue.qsize() >= SHELVE_BACKLOG:
                if self._shelve(changes[n:]):
                    break
                shelving = False        # the spool failed: not again for each call of the batch
            pool.spawn(self._submit, change)
        pool.join()

    def _submit(self, change):
        try:
            self.writer.submit_live(change)
        except Exception:
            log.exception("live update of call %s failed", change.call_id)

    def _shelve(self, changes):
        """True when the spool took ``changes``; False: write them as usual."""
        try:
            self.writer.shelve_live(changes)
        except Exception:
            log.exception("could not spool the live updates of %d call(s)", len(changes))
            return False
        self.stats["shelved"] += len(changes)
        if self.clock() - self._shelve_logged >= SHELVE_LOG_INTERVAL:
            self._shelve_logged = self.clock()
            log.warning("AMI effects %d events behind: live updates go through the spool until it "
                        "catches up (%d call updates so far)", self.queue.qsize(), self.stats["shelved"])
        return True

    def _expire_loop(self):
        while True:
            gevent.sleep(EXPIRE_EVERY)
            for event in self.model.expire(self.clock()):
                self.enqueue(event)

    def update_of(self, event, awaited=False):
        """The CRM side of one domain event, as the LiveUpdate it makes, or None (popups are
        the notifier's business)."""
        kind = type(event).__name__
        if kind not in ("Answered", "Transferred", "Recording", "Ringing"):
            return None
        call_id = self.call_id_for(self.system_name, event.linkedid)
        if kind == "Answered":
            return self._update(call_id, "answered", event.extension, awaited)
        if kind == "Transferred":
            return self._update(call_id, "transferred", event.to_extension, awaited)
        if kind == "Recording":
            return LiveUpdate(call_id, "recording", path=event.path, awaited=awaited)
        if event.did in self.dids:
            did = self.dids[event.did]
            return LiveUpdate(call_id, "attribution", did=event.did, campaign=did.campaign,
                              lead_source=did.lead_source, group=did.group, awaited=awaited)
        return None

    def _update(self, call_id, kind, extension, awaited):
        user = user_for_extension(self.directory, extension) if extension else None
        return LiveUpdate(call_id, kind, extension=extension, user_id=user.id if user else None, awaited=awaited)


class Transfers:
    """Click-to-transfer from a popup: Redirect the caller's channel to an extension; an
    app_agent_pool agent id logged in now goes to ``agent_context`` (AgentRequest), which
    rings the phone the agent is logged in from."""

    def __init__(self, model, client, context, agent_context="agent-request"):
        self.model, self.client, self.context, self.agent_context = model, client, context, agent_context

    def __call__(self, linkedid, extension):
        channel = self.model.caller_channel(linkedid)
        if channel is None:
            return False, phrase("the call is no longer in progress")
        logged = {agent: phone for agent, (_, phone) in self.model.agents.logged.items()}
        context, exten = originate.destination(extension, self.context, logged, self.agent_context)
        try:
            response = self.client.action("Redirect", [("Channel", channel), ("Context", context),
                                                       ("Exten", exten), ("Priority", "1")])
        except AmiError as exc:
            return False, phrase("Asterisk did not take the transfer: %s", exc)
        if (response.response or "").lower() != "success":
            return False, phrase("Asterisk refused the transfer: %s", response.get("Message") or response.response)
        return True, phrase("transferred to %s", extension)


def build(config, directory, writer, call_id_for, notify=None):
    """The AMI client and live-call pipeline for ``config``; None when [ami] host is empty."""
    ami = config.ami
    if not ami.host:
        return None
    model = callmodel.CallModel.from_settings(ami, internal_max_digits=config.lookup.internal_max_digits)
    live = LivePipeline(model, directory, writer, call_id_for, config.agi.system_name, config.dids, notify,
                        await_rows=config.agi.workers > 1)
    client = AmiClient(ami.host, ami.port, ami.username, ami.secret, live,
                       ping_interval=ami.ping_interval, timeout=ami.timeout)
    return live, client
