"""AMI events -> the call model's state changes: one ``_on_<Event>`` method per event followed.

A mixin of ``agi.ami.callmodel.CallModel`` (collected once by name, like the AMI client's
``on_<Event>`` handlers).  Kept apart from the leg state machine so each file has one concern:
here is what each Asterisk 22 event means, there is what a ring, an answer and an end do.
Events not listed here (Newexten, AGIExec*, Cdr, DeviceStateChange, ...) are ignored.
"""
from typing import List, Optional

from agi.ami import callresync
from agi.ami.channels import MAX_CHANNELS, STOP_REASON, Call, Chan, clean, local_partner, parse_seconds, peer_extension

_WATCHED = {"MIXMONITOR_FILENAME", "CRM_DIRECTION", "CRM_DID"}
MAX_RECORDINGS = 20         # per call
MAX_TRANSFERS = 100         # per call


class AmiHandlers:
    # ------------------------------------------------------------------ channels
    def _chan(self, msg, now, prefix="") -> Optional[Chan]:
        """The channel a message is about, registered on first sight; None when not followed."""
        uid = msg.get(prefix + "Uniqueid")
        if not uid or uid in ("none", "<unknown>"):
            return None
        chan = self.chans.get(uid)
        if chan is None:
            chan = self._register(uid, msg.get(prefix + "Channel") or "", msg.get(prefix + "Linkedid") or uid, now)
            if chan is None:
                return None
        for attr, key in (("context", "Context"), ("exten", "Exten"), ("state", "ChannelStateDesc")):
            value = msg.get(prefix + key)
            if value:
                setattr(chan, attr, value)
        for attr, key in (("cid_num", "CallerIDNum"), ("cid_name", "CallerIDName")):
            value = msg.get(prefix + key)
            if value is not None:
                setattr(chan, attr, clean(value))
        call = self.calls.get(chan.call)
        if call is not None:
            call.last_seen = now
            if chan.uid == call.origin:
                self._classify(call, chan.context, chan.exten)
        return chan

    def _register(self, uid, name, linkedid, now) -> Optional[Chan]:
        if linkedid in self.tombstones:
            return None                   # a late or replayed event of a call that has ended
        call = self.calls.get(linkedid)
        if call is None:
            call = self.calls[linkedid] = Call(linkedid, last_seen=now)
        if len(call.channels) >= MAX_CHANNELS:
            return None
        chan = call.channels[uid] = self.chans[uid] = Chan(uid, name, linkedid)
        if name:
            self.names[name] = uid
        if uid == linkedid:
            call.origin = uid
            call.caller.add(uid)
        partner = self.chans.get(self.names.get(local_partner(name) or "", ""))
        if partner is not None:
            self._pair(partner, chan)
        return chan

    def _pair(self, a: Chan, b: Chan):
        """Two halves of a Local channel are one party: the caller, or one leg."""
        call = self.calls.get(a.call)
        if call is None:
            return
        for one, two in ((a, b), (b, a)):
            if one.uid in call.caller:
                call.caller.add(two.uid)
            if one.uid in call.device_leg:
                call.device_leg[two.uid] = call.device_leg[one.uid]

    def _calls_serving(self, chan) -> List[Call]:
        linked = [chan.call] + sorted(self.foreign.get(chan.uid, ()))
        return [self.calls[lid] for lid in linked if lid in self.calls]

    # ------------------------------------------------------------------ bridges and agents
    def _enter_bridge(self, chan: Chan, bridge, now):
        if not bridge or chan.bridge == bridge:
            return
        self._leave_bridge(chan)
        chan.bridge = bridge
        members = self.bridges.setdefault(bridge, set())
        members.add(chan.uid)
        self._set_connected(chan, True, now)
        for uid in sorted(members - {chan.uid}):
            other = self.chans.get(uid)
            if other is not None:
                self._agent_meets(chan, other, now)
                self._agent_meets(other, chan, now)

    def _leave_bridge(self, chan: Chan):
        members = self.bridges.get(chan.bridge)
        if members is not None:
            members.discard(chan.uid)
            if not members:
                del self.bridges[chan.bridge]
        chan.bridge = ""

    def _set_connected(self, chan: Chan, value, now):
        for call in self._calls_serving(chan):
            leg = call.leg_of(chan.uid)
            if leg is not None and leg.state == "answered":
                self._connect(call, leg, value, now)

    def _agent_meets(self, agent_chan: Chan, peer: Chan, now):
        """AgentRequest has no Agent* events: an agent's channel bridged with a call is its leg."""
        agent = self.agents.by_uid.get(agent_chan.uid)
        call = self.calls.get(peer.call)
        if agent is None or call is None or call.agent_session:
            return
        leg = call.leg_of(peer.uid)
        if leg is not None:               # the queue member Local/1001@agent-request is this agent
            if not leg.closed:            # later events of the leg (same leg_id) name the real phone
                leg.extension = self.agents.extension(agent)
        elif peer.uid in call.caller and call.leg_of(agent_chan.uid) is None:
            leg = self._new_leg(call, agent_chan.uid, self.agents.extension(agent), True, "", call.queue)
            if leg is None:
                return
            leg.devices.add(agent_chan.uid)
            call.device_leg[agent_chan.uid] = leg.leg_id
            self.foreign.setdefault(agent_chan.uid, set()).add(call.linkedid)
            if not self.resyncing:        # it never rang, but the popup needs the caller
                self._emit_ringing(call, leg)
            self._answer(call, leg, now)

    # ------------------------------------------------------------------ AMI events
    def _on_Newchannel(self, msg, now):
        self._chan(msg, now)

    _on_Newstate = _on_NewCallerid = _on_NewConnectedLine = _on_Newchannel

    def _on_LocalBridge(self, msg, now):
        one, two = self._chan(msg, now, "LocalOne"), self._chan(msg, now, "LocalTwo")
        if one is not None and two is not None:
            self._pair(one, two)

    def _on_Rename(self, msg, now):
        chan = self.chans.get(msg.get("Uniqueid") or "")
        if chan is not None and msg.get("Newname"):
            self.names.pop(chan.name, None)
            chan.name = msg.get("Newname")
            self.names[chan.name] = chan.uid

    def _on_VarSet(self, msg, now):
        if msg.get("Variable") not in _WATCHED:
            return                        # a thousand VarSets per scenario: read only ours
        chan = self._chan(msg, now)
        call = self.calls.get(chan.call) if chan else None
        if call is None:
            return
        value = msg.get("Value") or ""
        if msg.get("Variable") == "MIXMONITOR_FILENAME":
            chan.recording = value
        elif msg.get("Variable") == "CRM_DID":
            call.did = clean(value) or call.did
        else:
            self._force(call, value)

    def _on_MixMonitorStart(self, msg, now):
        chan = self._chan(msg, now)
        call = self.calls.get(chan.call) if chan else None
        if call is None or not chan.recording or chan.recording in call.recordings:
            return                        # the path is the channel's MIXMONITOR_FILENAME VarSet
        if len(call.recordings) < MAX_RECORDINGS:
            call.recordings[chan.recording] = False
            self._emit_recording(call, chan.recording)

    def _on_DialBegin(self, msg, now):
        dest = self._chan(msg, now, "Dest")
        if dest is None:
            return
        if msg.get("Channel"):
            self._dial(self._chan(msg, now), dest, msg.get("DialString") or dest.name, None, now)
            return
        call = self.calls.get(dest.call)  # an Originate: the first channel, not a ringing phone
        if call is not None and dest.uid == call.origin:
            call.originate_key = "%s/%s" % (dest.name.split("/")[0], msg.get("DialString") or "")

    def _on_AgentCalled(self, msg, now):
        self._dial(self._chan(msg, now), self._chan(msg, now, "Dest"), msg.get("Interface") or "",
                   msg.get("Queue"), now)

    def _on_DialEnd(self, msg, now):
        dest = self._chan(msg, now, "Dest")
        status = (msg.get("DialStatus") or "").upper()
        if dest is None:
            return
        if not msg.get("Channel"):
            call = self.calls.get(dest.call)
            if call is not None and dest.uid == call.origin:
                call.originate_status = status
            return
        dialer = self._chan(msg, now)
        call = self.calls.get(dialer.call) if dialer else None
        if call is None:
            return
        if dialer.uid in call.caller and status:
            call.dial_status = status
        leg = call.leg_of(dest.uid)
        if leg is not None and status == "ANSWER":
            self._answer(call, leg, now)
        elif leg is not None and dest.uid in leg.devices:
            self._device_gone(call, leg, dest.uid, STOP_REASON.get(status, "hangup"), now)

    def _member(self, msg, now):
        dest = self._chan(msg, now, "Dest")
        call = self.calls.get(dest.call) if dest else None
        leg = call.leg_of(dest.uid) if call else None
        return call, leg, dest

    def _on_AgentRingNoAnswer(self, msg, now):
        call, leg, dest = self._member(msg, now)     # RingTime is in ms here; we need no duration
        if leg is not None and dest.uid in leg.devices:
            self._device_gone(call, leg, dest.uid, "no_answer", now)

    def _on_AgentConnect(self, msg, now):
        call, leg, _ = self._member(msg, now)
        if leg is not None:
            self._answer(call, leg, now)

    def _on_AgentComplete(self, msg, now):
        call, leg, dest = self._member(msg, now)
        talk = parse_seconds(msg.get("TalkTime"))
        if call is not None and talk is not None:
            call.talk_reported[dest.uid] = talk       # keyed: a repeated event counts once

    def _on_QueueCallerJoin(self, msg, now):
        chan = self._chan(msg, now)
        call = self.calls.get(chan.call) if chan else None
        if call is not None and chan.uid in call.caller:
            call.queue = msg.get("Queue") or None

    def _on_QueueCallerLeave(self, msg, now):
        chan = self._chan(msg, now)
        call = self.calls.get(chan.call) if chan else None
        if call is not None and chan.uid in call.caller:
            call.queue = None

    def _on_QueueMemberStatus(self, msg, now):
        self.agents.member(msg.get("Interface"), msg.get("StateInterface"))

    _on_QueueMember = _on_QueueMemberStatus

    def _on_AgentLogin(self, msg, now):
        chan = self._chan(msg, now)
        if chan is None or not msg.get("Agent"):
            return
        self.agents.login(msg.get("Agent"), chan)
        call = self.calls.get(chan.call)
        if call is not None:
            call.agent_session = True     # the login's own "call" is never reported

    def _on_AgentLogoff(self, msg, now):
        self.agents.logoff(msg.get("Agent"))

    def _on_Agents(self, msg, now):
        if msg.get("Status") == "AGENT_LOGGEDOFF":
            self.agents.logoff(msg.get("Agent"))
        elif msg.get("Channel"):
            self._on_AgentLogin(msg, now)

    def _on_BridgeEnter(self, msg, now):
        chan = self._chan(msg, now)
        if chan is not None:
            self._enter_bridge(chan, msg.get("BridgeUniqueid"), now)

    def _on_BridgeLeave(self, msg, now):
        chan = self.chans.get(msg.get("Uniqueid") or "")
        if chan is not None and chan.bridge and chan.bridge == msg.get("BridgeUniqueid"):
            self._leave_bridge(chan)
            self._set_connected(chan, False, now)

    def _on_BridgeMerge(self, msg, now):
        source, target = msg.get("FromBridgeUniqueid"), msg.get("ToBridgeUniqueid")
        for uid in sorted(self.bridges.get(source, ())):
            if uid in self.chans:
                self._enter_bridge(self.chans[uid], target, now)

    def _on_BlindTransfer(self, msg, now):
        if msg.get("Result") != "Success":
            return
        source = self.chans.get(msg.get("TransfererUniqueid") or "")
        anchor = self.chans.get(msg.get("TransfereeUniqueid") or "") or source
        call = self.calls.get(anchor.call) if anchor else None
        key = ("blind", msg.get("TransfererUniqueid"), msg.get("TransfereeUniqueid"), msg.get("Extension"))
        if call is None or key in call.transfers:
            return
        self._seen_transfer(call, key)
        self._transferred(call, self._extension_of(call, source), msg.get("Extension") or "", "blind")
        call.transfer_pending = True      # the transferee's next Dial is this transfer, not a redirect
        self._disconnect(call, source, now)

    def _on_AttendedTransfer(self, msg, now):
        if msg.get("Result") != "Success":
            return
        source = self.chans.get(msg.get("OrigTransfererUniqueid") or "")
        anchor = self.chans.get(msg.get("TransfereeUniqueid") or "") or source
        call = self.calls.get(anchor.call) if anchor else None
        key = ("attended", msg.get("OrigTransfererUniqueid"), msg.get("TransferTargetUniqueid"))
        if call is None or key in call.transfers:
            return
        self._seen_transfer(call, key)
        target = callresync.consult_leg(self, call, msg.get("TransferTargetUniqueid") or "",
                                        msg.get("TransferTargetChannel") or "", now)
        to_extension = target.extension if target else peer_extension(msg.get("TransferTargetChannel"))
        self._transferred(call, self._extension_of(call, source), to_extension, "attended")
        self._disconnect(call, source, now)
        if target is not None and target.state == "answered":
            self._take(call, target, now)

    @staticmethod
    def _seen_transfer(call: Call, key):
        if len(call.transfers) < MAX_TRANSFERS:       # bounded; past it a repeat could count twice
            call.transfers.add(key)

    def _disconnect(self, call: Call, chan, now):
        leg = call.leg_of(chan.uid) if chan else None
        if leg is not None:
            self._connect(call, leg, False, now)

    def _on_OriginateResponse(self, msg, now):
        """Click-to-call: the originated phone's call goes where the Originate said."""
        if not msg.get("Context"):
            return
        if msg.get("Response") == "Success":
            chan = self.chans.get(msg.get("Uniqueid") or "")
            call = self.calls.get(chan.call) if chan else None
        else:                             # failed: Channel is the dial string, Uniqueid <unknown>
            key = msg.get("Channel") or ""
            call = next((c for c in reversed(list(self.calls.values()))
                         if c.direction is None and c.originate_key == key), None)
        if call is not None:
            self._classify(call, msg.get("Context"), msg.get("Exten"))

    def _on_Hangup(self, msg, now):
        chan = self.chans.get(msg.get("Uniqueid") or "")
        if chan is not None and chan.alive:
            self._chan(msg, now)
            self._gone(chan, msg.get("Cause") or "", now)

    def _on_Shutdown(self, msg, now):
        """Asterisk is going away: every call still here ends; agents are logged out."""
        for call in list(self.calls.values()):
            call.gap = True
            self._end(call, now)
        self.agents.clear()
        self.bridges.clear()
