"""Call events of a plugin PBX -> the same effects as the AGI + AMI path.

``start`` runs what the ``incoming``/``outgoing`` AGI runs (lookup within ``[agi]
timeout``, the Call row written by routes.write_start), ``end`` what the ``hangup`` AGI
runs (the end written ahead, then completed), and ``ringing`` / ``answered`` /
``transferred`` / ``recording`` become the call model's domain events (agi/ami/callmodel.py),
handed to the live pipeline like the AMI listener's: the CRM updates and the popups
cannot tell a plugin call from an Asterisk one.

The plugin's call id names the call (linkedid ``p:<id>``): every event is idempotent, a
replayed ``start`` changes nothing, events after ``end`` are acknowledged and ignored.
"""
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Optional

import gevent

from crmsync.models import CallRecord

from agi.fastagi import callstate, routes
from agi.ami.callmodel import Answered, Ended, Recording, Ringing, RingingStopped, Transferred

MAX_CALLS = 20000          # calls in progress (and ended ones remembered) per tenant
CALL_TTL = 6 * 3600.0      # a call without events for this long is forgotten
# The plugin's end cause -> Asterisk's DIALSTATUS, which crmsync/outcome.py understands.
DIAL_STATUS = {"answered": "ANSWER", "noanswer": "NOANSWER", "busy": "BUSY", "cancelled": "CANCEL",
               "failed": "CHANUNAVAIL"}
STOP_REASON = {"answered": "hangup", "noanswer": "no_answer", "busy": "busy", "cancelled": "cancelled",
               "failed": "cancelled"}
OUTCOME = {"answered": "answered", "noanswer": "noanswer", "busy": "busy", "cancelled": "missed",
           "failed": "failed"}


@dataclass
class PluginCall:
    record: CallRecord
    touched: float
    ringing: Dict[str, bool] = field(default_factory=dict)     # extension -> still ringing
    answered: list = field(default_factory=list)                # extensions that had the caller
    ended: bool = False


def linkedid_of(call):
    return "p:" + call


def _now():
    return datetime.now(timezone.utc)


class PluginCalls:
    """The calls of one tenant's plugin connections.  ``effects(event)`` takes a domain event
    in order (the live pipeline's queue: CRM update, then popups)."""

    def __init__(self, flow, effects, clock=time.monotonic):
        self.flow, self.effects, self.clock = flow, effects, clock
        self.calls: "OrderedDict[str, PluginCall]" = OrderedDict()
        self.observers = []         # f(call, message) after each event (plugin click-to-call)

    def handle(self, message) -> str:
        """Apply one ``call`` message (schema-checked); returns the CRM Call id for the ack."""
        linkedid = linkedid_of(message["call"])
        call = self.calls.get(linkedid)
        event = message["event"]
        if event == "start":
            if call is None:
                call = self._start(linkedid, message)
        elif call is None:
            call = self._adopt(linkedid, message)
        if call.ended:
            return call.record.call_id
        call.touched = self.clock()
        self.calls.move_to_end(linkedid)
        getattr(self, "_on_" + event, lambda c, m: None)(call, message)
        for observe in self.observers:
            observe(call, message)
        self._forget_old()
        return call.record.call_id

    # -- start ------------------------------------------------------------------
    def _start(self, linkedid, message):
        flow = self.flow
        deadline = self.clock() + flow.timeout
        inbound = message["direction"] == "in"
        number = callstate.clean(message["from"] if inbound else message["to"])
        extension = None if inbound else callstate.clean(message.get("extension") or message["from"])
        # A call crmagi asked the PBX to place (click-to-call) carries crmagi's signed mark.
        mark = None if inbound else routes.valid_mark(flow.click_secret, message.get("click"), number, time.time())
        job = None if mark and mark.record_id else flow.start_lookup(flow.directory.lookup, number)
        user_job = None if inbound or mark else flow.start_lookup(flow.directory.user_by_extension, extension)
        result = routes.clicked(mark, number) if job is None else flow.wait_lookup(job, deadline)
        record = CallRecord(call_id=flow.call_id_for(flow.system_name, linkedid), linkedid=linkedid,
                            uniqueid=linkedid, direction="Inbound" if inbound else "Outbound", number=number,
                            started_at=_now(), extension=extension,
                            did=(message.get("did") or message["to"]) if inbound else None)
        flow.linker.link(record, result)
        if not inbound:
            flow.linker.assign_outbound(record, flow.wait_lookup(user_job, deadline), result)
        if mark is not None:
            record.assigned_user_id = mark.user_id
        call = self._keep(linkedid, record)
        # The late lookup and the write run apart: the ack must not wait on the CRM.
        gevent.spawn(routes.write_start, flow, job, record, result, rings=True)
        return call

    def _adopt(self, linkedid, message):
        """An event for a call whose start never came (crmagi restarted, the plugin lost it):
        the call is rebuilt like a hangup without CRM_CALL, its lookup left to the writer."""
        inbound = message.get("direction", "in") == "in"
        target = message.get("did") or message.get("to") if inbound else callstate.clean(message.get("to"))
        record = routes.rebuild(self.flow, "Inbound" if inbound else "Outbound", linkedid, linkedid,
                                message.get("from"), target)
        return self._keep(linkedid, record)

    def _keep(self, linkedid, record):
        call = PluginCall(record, self.clock())
        self.calls[linkedid] = call
        return call

    # -- while it rings and talks ---------------------------------------------
    def _on_ringing(self, call, message):
        extension = message["extension"]
        if call.ringing.get(extension):
            return
        call.ringing[extension] = True
        record = call.record
        self.effects(Ringing(record.linkedid, extension, extension, record.number, record.caller_name or "",
                             record.did or "", record.direction, message.get("queue")))

    def _on_answered(self, call, message):
        extension = message["extension"]
        if call.answered and call.answered[-1] == extension:
            return
        call.ringing.pop(extension, None)
        call.answered.append(extension)
        self.effects(Answered(call.record.linkedid, extension, extension, message.get("queue")))
        self._stop_ringing(call, "answered_elsewhere")     # after the answer, as the AMI model says it

    def _on_transferred(self, call, message):
        target = message["extension"]
        previous = call.answered[-1] if call.answered else ""
        if previous != target:
            self.effects(Transferred(call.record.linkedid, previous, target, "blind"))

    def _on_recording(self, call, message):
        self.effects(Recording(call.record.linkedid, message["url"]))

    def _stop_ringing(self, call, reason, keep=None):
        for extension, ringing in list(call.ringing.items()):
            if ringing and extension != keep:
                call.ringing[extension] = False
                self.effects(RingingStopped(call.record.linkedid, extension, extension, reason))

    # -- end --------------------------------------------------------------------
    def _on_end(self, call, message):
        cause = message["cause"] if message["cause"] in DIAL_STATUS else "failed"
        self._stop_ringing(call, STOP_REASON[cause])
        record = call.record
        record.ended_at = _now()
        record.dial_status = DIAL_STATUS[cause]
        talk = message.get("talk_seconds")
        record.talk_seconds = (talk or 0) if cause == "answered" else None
        record.ring_seconds = message.get("ring_seconds")
        record.answered_extension = (call.answered[-1] if call.answered else None) if cause == "answered" else None
        if record.direction == "Outbound":
            record.answered_extension = record.extension if cause == "answered" else None
        record.hangup_cause = message["cause"][:64]
        call.ended = True
        flow = self.flow
        ticket = flow.writer.begin("finish", record)
        gevent.spawn(flow.notify, "ended", record, None)
        self.effects(Ended(record.linkedid, OUTCOME[cause] if record.direction == "Outbound" or cause == "answered"
                           else "missed", record.talk_seconds or 0, tuple(call.answered), record.did or "",
                           record.direction))
        flow.writer.complete(ticket)

    def _forget_old(self):
        now = self.clock()
        while self.calls and (len(self.calls) > MAX_CALLS
                              or now - next(iter(self.calls.values())).touched > CALL_TTL):
            self.calls.popitem(last=False)

    def owner_of(self, linkedid) -> Optional[PluginCall]:
        return self.calls.get(linkedid)
