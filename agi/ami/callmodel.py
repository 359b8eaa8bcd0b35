"""The live call model: AMI events in, domain events out.

A pure state machine: no I/O and no clock of its own (every call takes ``now``).  Feed it
every AMI event (``feed``), call ``expire`` now and then, and ``load_channels`` with the
CoreShowChannels list after a reconnect.  It answers with the frozen domain events below,
keyed by ``linkedid`` (the Call id the AGI side derives from it).

How Asterisk 22 is read (shared/fixtures/asterisk/README.md, "AMI events"):

* channels are grouped by the Linkedid they were *created* with; a channel keeps its call
  even when Asterisk later rewrites its Linkedid (AgentRequest bridges it with the agent's
  older one: 08a, 08b), so the index is by Uniqueid.
* one phone is one leg: the Local pair behind it, the devices of a multi-contact endpoint and
  a Local queue member's own Dial all count once.  A Ringing is emitted when Asterisk starts
  ringing it (DialBegin or AgentCalled, whichever comes first), and closed by exactly one
  RingingStopped or Answered.
* the direction comes from the context of the call's first channel (or CRM_DIRECTION);
  internal calls, agent login sessions and ignore_contexts emit nothing.  A click-to-call
  Originate rings the agent's own phone first: that is the caller side of an outbound call,
  not a Ringing; the OriginateResponse (matched by its dial string when it failed) says
  where the call goes.
* a transfer changes who has the caller: BlindTransfer and AttendedTransfer say so, an AMI
  Redirect only shows as a new Dial from the caller after the answering phone left.
"""
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

from agi.ami import callresync
from agi.ami.callhandlers import AmiHandlers
from agi.ami.channels import (CAUSE_REASON, CAUSE_STATUS, IGNORED, INBOUND, INTERNAL, MAX_ANSWERED, MAX_LEGS, OUTBOUND,
                       AgentBook, Call, Chan, Leg, channel_extension, clean, is_internal, local_partner,
                       peer_extension)

MAX_TOMBSTONES = 20000      # ended linkedids remembered so a replayed event does not revive a call


@dataclass(frozen=True)
class Ringing:
    """A phone starts ringing for a call: show the popup.  ``did`` is '' on outbound calls, where
    ``caller_number`` is the number dialled; ``direction`` is "Inbound" or "Outbound" (as the
    CRM's calls.direction).  An agent reached by AgentRequest gets one too, right before its
    Answered, although Asterisk never rang it."""
    linkedid: str
    leg_id: str
    extension: str
    caller_number: str
    caller_name: str
    did: str
    direction: str
    queue: Optional[str]


@dataclass(frozen=True)
class RingingStopped:
    """That leg's popup closes without an answer (a leg is keyed by ``leg_id`` within the call)."""
    linkedid: str
    leg_id: str
    extension: str
    reason: str          # answered_elsewhere | no_answer | busy | cancelled | hangup


@dataclass(frozen=True)
class Answered:
    """``extension`` now has the caller.  On an outbound call it names the phone that placed
    the call (leg_id is that phone's channel), when the far end answered.  It may come without
    a Ringing: outbound calls, and after a resync."""
    linkedid: str
    extension: str
    leg_id: str
    queue: Optional[str]


@dataclass(frozen=True)
class Transferred:
    linkedid: str
    from_extension: str
    to_extension: str
    kind: str            # blind | attended | redirect


@dataclass(frozen=True)
class Recording:
    linkedid: str
    path: str


@dataclass(frozen=True)
class Ended:
    """The call is over; nothing follows for this linkedid.  ``talk_seconds`` runs from the first
    answer until the last answering phone stopped talking (AgentComplete TalkTime for a call a
    queue member took alone).  "lost": expired, or ended while AMI was away unanswered."""
    linkedid: str
    outcome: str         # answered | missed | busy | noanswer | failed | lost
    talk_seconds: int
    answered_extensions: Tuple[str, ...]
    did: str
    direction: str


DomainEvent = Union[Ringing, RingingStopped, Answered, Transferred, Recording, Ended]


class CallModel(AmiHandlers):
    """Calls in progress, built from AMI events; see the module docstring."""

    def __init__(self, inbound_contexts, outbound_contexts, ignore_contexts, call_ttl, agent_map=None,
                 *, internal_max_digits=5):
        """``agent_map``: agent id -> extension, for agents whose login the model has not seen.
        ``internal_max_digits``: dialled numbers this short are extensions ([lookup])."""
        self.inbound, self.outbound = frozenset(inbound_contexts), frozenset(outbound_contexts)
        self.ignore = frozenset(ignore_contexts)
        self.call_ttl = call_ttl
        self.max_digits = internal_max_digits
        self.calls: Dict[str, Call] = {}
        self.chans: Dict[str, Chan] = {}
        self.names: Dict[str, str] = {}               # channel name -> Uniqueid (Local pairs go by name)
        self.bridges: Dict[str, Set[str]] = {}
        self.foreign: Dict[str, Set[str]] = {}        # an agent's channel -> calls where it is a leg
        self.tombstones: "OrderedDict[str, float]" = OrderedDict()
        self.agents = AgentBook(agent_map)
        self.resyncing = False
        self._seq = itertools.count(1)
        self._out: List[DomainEvent] = []
        self._handlers = {name[4:]: getattr(self, name) for name in dir(type(self)) if name.startswith("_on_")}

    @classmethod
    def from_settings(cls, ami, agent_map=None, internal_max_digits=5):
        """From the ``[ami]`` section (config.AmiSettings)."""
        return cls(ami.inbound_contexts, ami.outbound_contexts, ami.ignore_contexts, ami.call_ttl, agent_map,
                   internal_max_digits=internal_max_digits)

    # ------------------------------------------------------------------ API
    def feed(self, message, now: float) -> List[DomainEvent]:
        """One unescaped AMI message (amiproto.Message) -> the domain events it causes."""
        handler = self._handlers.get(message.event or "")
        self._out = []
        if handler is not None:
            handler(message, now)
        return self._out

    def expire(self, now: float) -> List[DomainEvent]:
        """End (outcome "lost") and forget calls AMI has said nothing about for call_ttl."""
        self._out = []
        for call in [c for c in self.calls.values() if now - c.last_seen > self.call_ttl]:
            self._end(call, call.last_seen, "lost")
        for linkedid in [k for k, when in self.tombstones.items() if now - when > self.call_ttl]:
            del self.tombstones[linkedid]
        for bridge in list(self.bridges):
            self.bridges[bridge] &= set(self.chans)
            if not self.bridges[bridge]:
                del self.bridges[bridge]
        return self._out

    def load_channels(self, events: Iterable, now: float, known_before=None) -> List[DomainEvent]:
        """Resync from CoreShowChannel (+ Agents, QueueMember) events after a reconnect.
        ``known_before``: the channel uids held when the listing was requested (see callresync)."""
        self._out = []
        callresync.load(self, list(events), now, known_before)
        return self._out

    def snapshot(self) -> dict:
        """The calls, legs, agents and bridges as plain data, for debugging."""
        return callresync.snapshot(self)

    def size(self) -> Dict[str, int]:
        """How much the model holds; everything but agents drains to 0 once calls expire."""
        return {"calls": len(self.calls), "channels": len(self.chans), "names": len(self.names),
                "bridges": len(self.bridges), "foreign": len(self.foreign), "tombstones": len(self.tombstones),
                "agents": len(self.agents.logged), "members": len(self.agents.members)}

    def __len__(self):
        return len(self.calls)

    def caller_channel(self, linkedid) -> Optional[str]:
        """Name of the live channel of the call's first party (the caller), for a Redirect."""
        call = self.calls.get(linkedid)
        chan = self.chans.get(call.origin or "") if call is not None else None
        return chan.name if chan is not None and chan.alive else None

    # ------------------------------------------------------------------ direction
    def _classify(self, call: Call, context, exten):
        if call.forced or call.direction is not None or not context:
            return
        if context in self.ignore:
            call.direction = IGNORED
        elif context in self.inbound:
            call.direction, call.did = INBOUND, call.did or clean(exten)
        elif context in self.outbound:
            remote = clean(exten)
            call.direction = INTERNAL if is_internal(remote, self.max_digits) else OUTBOUND
            call.remote = remote
        else:
            return                        # a phone being originated: wait for where it goes
        self._activate(call)

    def _force(self, call: Call, value):
        """CRM_DIRECTION, set by crmagi's dialplan include, wins over the contexts."""
        direction = {"inbound": INBOUND, "outbound": OUTBOUND}.get(value.strip().lower(), INTERNAL)
        if value.strip() and (direction, True) != (call.direction, call.forced):
            call.direction, call.forced = direction, True
            origin = self.chans.get(call.origin or "")
            if direction == INBOUND and not call.did and origin is not None:
                call.did = clean(origin.exten)
            self._activate(call)

    def _activate(self, call: Call):
        """A call just became one we report: tell what is still true of it."""
        if not call.active:
            return
        for leg in list(call.legs.values()):
            if leg.state == "ringing":
                self._emit_ringing(call, leg)
            elif leg.state == "answered" and not leg.consult:
                self._emit_answered(call, leg)
        for path in list(call.recordings):
            self._emit_recording(call, path)

    # ------------------------------------------------------------------ emitting
    def _emit(self, call: Call, event, closing=False):
        """Opening events need a reported call; closing ones follow whatever was opened."""
        if call.active or (closing and call.emitted):
            call.emitted = True
            self._out.append(event)

    def _emit_ringing(self, call: Call, leg: Leg, dialer=None):
        if leg.rang or leg.closed or not leg.phone or not call.active:
            return
        leg.rang = True
        number, name = self._caller_id(call, dialer)
        self._emit(call, Ringing(call.linkedid, leg.leg_id, leg.extension, number, name, call.did,
                                 call.direction, leg.queue))

    def _emit_answered(self, call: Call, leg: Leg):
        if leg.closed or not (call.active or leg.rang):
            return
        leg.closed = True
        extension, leg_id = self._identity(call, leg)
        self._emit(call, Answered(call.linkedid, extension, leg_id, leg.queue), closing=True)

    def _emit_stopped(self, call: Call, leg: Leg, reason):
        if leg.rang and not leg.closed:
            leg.closed = True
            self._emit(call, RingingStopped(call.linkedid, leg.leg_id, leg.extension, reason), closing=True)

    def _transferred(self, call: Call, from_extension, to_extension, kind):
        self._emit(call, Transferred(call.linkedid, from_extension, to_extension, kind))

    def _emit_recording(self, call: Call, path):
        if call.active and not call.recordings.get(path):
            call.recordings[path] = True
            self._emit(call, Recording(call.linkedid, path))

    def _caller_id(self, call: Call, dialer) -> Tuple[str, str]:
        """Who is calling, as the dialling channel shows it (the AGI may have renamed it)."""
        if call.direction == OUTBOUND:
            return call.remote, ""
        chans = [dialer] if dialer is not None and dialer.uid in call.caller else []
        chans += sorted((self.chans[u] for u in call.caller if u in self.chans), key=lambda c: c.uid == call.origin)
        return (next((c.cid_num for c in chans if c.cid_num), ""),
                next((c.cid_name for c in chans if c.cid_name), ""))

    def _identity(self, call: Call, leg: Leg) -> Tuple[str, str]:
        """(extension, leg_id) of an answer: on an outbound call, the phone that placed it."""
        if leg.phone or call.direction != OUTBOUND:
            return leg.extension, leg.leg_id
        return self._origin_extension(call), call.origin or leg.leg_id

    def _origin_extension(self, call: Call) -> str:
        chan = self.chans.get(call.origin or "")
        return channel_extension(chan.name, chan.cid_num) if chan else ""

    def _extension_of(self, call: Call, chan) -> str:
        leg = call.leg_of(chan.uid) if chan else None
        if leg is not None:
            return self._identity(call, leg)[0]
        if chan is not None and chan.uid in call.caller:
            return self._origin_extension(call)
        return peer_extension(chan.name) if chan else ""

    # ------------------------------------------------------------------ legs
    def _dial(self, dialer, dest, peer, queue, now):
        if dialer is None or dest is None:
            return
        call = self.calls.get(dialer.call)
        if call is None or dest.uid in call.device_leg or dest.uid in call.caller:
            return                        # AgentCalled and DialBegin of one member: once
        inner = call.leg_of(dialer.uid)
        if inner is not None:             # a Local member's ;2 dialling the real phone: the same phone
            self._add_device(call, inner, dest, primary=False)
            return
        extension = self._target(peer)
        from_caller = dialer.uid in call.caller
        phone = is_internal(extension, self.max_digits) and not (
            call.direction == OUTBOUND and from_caller and not call.answered)
        self._new_attempt(call, from_caller, extension)
        leg = self._open_leg(call, extension) if phone else None   # a second device of one extension
        if leg is None:
            leg = self._new_leg(call, dest.uid, extension, phone, dialer.uid,
                                queue or (call.queue if from_caller else None))
        if leg is not None:
            self._add_device(call, leg, dest, primary=True)
            self._emit_ringing(call, leg, dialer)

    def _target(self, peer) -> str:
        agent = self.agents.agent_for(peer)
        return self.agents.extension(agent) if agent else peer_extension(peer)

    def _new_attempt(self, call: Call, from_caller, extension):
        """A new Dial after the answering phone left: an AMI Redirect (no transfer event exists)."""
        holder = call.legs.get(call.holder or "")
        if call.transfer_pending:         # the Dial of a BlindTransfer already told
            call.transfer_pending, call.holder = False, None
        elif from_caller and holder is not None and holder.phone and not holder.connected:
            call.holder = None
            self._transferred(call, holder.extension, extension, "redirect")

    def _open_leg(self, call: Call, extension) -> Optional[Leg]:
        for leg in reversed(call.legs.values()):
            if leg.state == "ringing" and leg.phone and leg.extension == extension:
                return leg
        return None

    def _new_leg(self, call: Call, leg_id, extension, phone, dialer, queue) -> Optional[Leg]:
        if len(call.legs) >= MAX_LEGS:
            self._prune_legs(call)
        if len(call.legs) >= MAX_LEGS:
            return None
        seq = next(self._seq)
        if leg_id in call.legs:           # the same agent channel taking the call again
            leg_id = "%s#%d" % (leg_id, seq)
        leg = call.legs[leg_id] = Leg(leg_id, extension, phone, dialer, queue, seq)
        return leg

    def _prune_legs(self, call: Call):
        for leg in [old for old in call.legs.values() if old.state == "stopped"][:MAX_LEGS // 2]:
            del call.legs[leg.leg_id]
            for uid in [u for u, lid in call.device_leg.items() if lid == leg.leg_id]:
                del call.device_leg[uid]

    def _add_device(self, call: Call, leg: Leg, chan: Chan, primary):
        call.device_leg[chan.uid] = leg.leg_id
        if primary:
            leg.devices.add(chan.uid)
        partner = self.names.get(local_partner(chan.name) or "")
        if partner:
            call.device_leg[partner] = leg.leg_id

    def _answer(self, call: Call, leg: Leg, now):
        if leg.state != "ringing":
            return
        leg.state, leg.connected = "answered", True
        holder = call.legs.get(call.holder or "")
        if holder is not None and holder is not leg and holder.connected and leg.dialer not in call.caller:
            leg.consult = True            # the transferer talks to the target first (06b)
            return
        self._take(call, leg, now)

    def _take(self, call: Call, leg: Leg, now):
        """The leg now has the caller: Answered, and the responsible extension changes."""
        leg.consult = False
        call.holder, call.talk_end = leg.leg_id, None
        call.answered_at = now if call.answered_at is None else call.answered_at
        call.answer_seq = next(self._seq)
        extension = self._identity(call, leg)[0]
        if len(call.answered) < MAX_ANSWERED and call.answered[-1:] != [extension]:
            call.answered.append(extension)
        self._emit_answered(call, leg)

    def _connect(self, call: Call, leg: Leg, value, now):
        """Talk time runs while the leg holding the caller is connected (ANSWEREDTIME does too)."""
        leg.connected = value
        if call.holder == leg.leg_id:
            call.talk_end = None if value else now

    def _device_gone(self, call: Call, leg: Leg, uid, reason, now):
        leg.devices.discard(uid)
        if leg.devices:
            return                        # another device of the phone still rings
        if leg.state == "ringing" or leg.consult:
            if reason in ("cancelled", "hangup") and call.answer_seq > leg.seq:
                reason = "answered_elsewhere"
            leg.state, leg.consult = "stopped", False
            self._emit_stopped(call, leg, reason)
        else:
            self._connect(call, leg, False, now)

    # ------------------------------------------------------------------ ending
    def _gone(self, chan: Chan, cause, now):
        chan.alive = False
        self._leave_bridge(chan)
        for linkedid in self.foreign.pop(chan.uid, ()):
            other = self.calls.get(linkedid)
            leg = other.leg_of(chan.uid) if other else None
            if leg is not None:
                self._device_gone(other, leg, chan.uid, "hangup", now)
        call = self.calls.get(chan.call)
        if call is None:
            return
        if chan.uid in call.caller:
            call.cause = cause or call.cause
        leg = call.leg_of(chan.uid)
        if leg is not None and chan.uid in leg.devices:
            self._device_gone(call, leg, chan.uid, CAUSE_REASON.get(cause, "hangup"), now)
        if not any(c.alive for c in call.channels.values()):
            self._end(call, now)

    def _end(self, call: Call, now, outcome=None):
        for leg in list(call.legs.values()):
            if leg.state == "ringing" or leg.consult:
                leg.state = "stopped"
                self._emit_stopped(call, leg, "answered_elsewhere" if call.answer_seq > leg.seq else "hangup")
        self._emit(call, Ended(call.linkedid, outcome or self._outcome(call), self._talk(call, now),
                               tuple(call.answered), call.did, call.direction or ""), closing=True)
        self._forget(call, now)

    def _outcome(self, call: Call) -> str:
        if call.answered:
            return "answered"
        if call.gap:
            return "lost"
        status = call.dial_status or call.originate_status or CAUSE_STATUS.get(call.cause, "")
        if status == "BUSY":
            return "busy"
        if call.direction == INBOUND:
            return "missed"
        return "noanswer" if status in ("NOANSWER", "CANCEL") else "failed"

    def _talk(self, call: Call, now) -> int:
        if not call.answered or call.answered_at is None:
            return 0
        if call.talk_reported and len(call.answered) == 1:
            return sum(call.talk_reported.values())   # Queue(): Asterisk's own count, free of AMI lag
        end = now if call.talk_end is None else call.talk_end
        return max(0, int(round(end - call.answered_at)))

    def _forget(self, call: Call, now):
        for uid, chan in call.channels.items():
            self._leave_bridge(chan)
            if self.chans.get(uid) is chan:
                del self.chans[uid]
            if self.names.get(chan.name) == uid:
                del self.names[chan.name]
        for uid in call.device_leg:
            linked = self.foreign.get(uid)
            if linked is not None:
                linked.discard(call.linkedid)
                if not linked:
                    del self.foreign[uid]
        del self.calls[call.linkedid]
        if not call.agent_session:        # an idle agent login that expired may speak again later
            self.tombstones[call.linkedid] = now
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)
