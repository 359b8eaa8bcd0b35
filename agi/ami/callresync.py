"""The call model after a reconnect, the target of an attended transfer, and debug snapshots.

After an AMI reconnect the client lists what is still up: ``CoreShowChannel`` events (Channel,
Uniqueid, Linkedid, ChannelStateDesc, Context, Exten, CallerID, BridgeId, ...) plus, when it
asks, ``Agents`` and ``QueueMember``/``QueueEntry`` events.  There is no dial relationship in
that list, so a channel that is neither the caller nor part of a known leg becomes a leg of
its own (one per extension: a Local pair and the devices of one phone still count once).

The same model instance keeps what it already reported, so only what changed during the gap
is emitted (a leg answered meanwhile, a call that ended meanwhile); a fresh model reports
what is still true: the phones ringing now (Ringing) and those talking (Answered).
"""
from agi.ami.channels import OUTBOUND, is_internal, local_partner, peer_extension


def load(model, events, now, known_before=None):
    """``known_before``: channel uids the model had when the listing was asked for; channels
    first seen after that (their events arrive while the list is being sent) are not in the
    snapshot and must not be taken for gone.  None: every channel is judged."""
    rows, entries = [], []
    for msg in events:
        if msg.event == "CoreShowChannel":
            rows.append(msg)
        elif msg.event == "QueueEntry":
            entries.append(msg)
        elif msg.event in ("Agents", "QueueMember", "QueueMemberStatus"):
            model._handlers[msg.event](msg, now)
    rows.sort(key=lambda m: _uid_order(m.get("Uniqueid")))
    model.resyncing = True            # AgentRequest legs found now did not just ring
    try:
        known = set(model.chans)
        seen = _register(model, rows, now)
        _queues(model, entries)
        for linkedid in sorted({model.chans[uid].call for uid in seen if uid in model.chans}):
            if linkedid in model.calls:
                _rebuild(model, model.calls[linkedid], seen - known, now)
        _vanish(model, seen, now, known_before)
    finally:
        model.resyncing = False


def _register(model, rows, now):
    seen = set()
    for msg in rows:
        chan = model._chan(msg, now)
        if chan is None:
            continue
        seen.add(chan.uid)
        bridge = msg.get("BridgeId") or ""
        if bridge:
            model._enter_bridge(chan, bridge, now)
        elif chan.bridge:
            model._leave_bridge(chan)
            model._set_connected(chan, False, now)
    return seen


def _queues(model, entries):
    for msg in entries:               # QueueStatus: callers still waiting in a queue
        chan = model.chans.get(msg.get("Uniqueid") or "")
        call = model.calls.get(chan.call) if chan else None
        if call is not None and chan.uid in call.caller:
            call.queue = msg.get("Queue") or None


def _rebuild(model, call, fresh, now):
    """New channels become legs; a channel known before keeps the role it had (a consultation
    pair, a Local member's ;2); known legs that are Up now were answered meanwhile."""
    for chan in list(call.channels.values()):
        if chan.uid not in fresh or chan.uid in call.caller or call.leg_of(chan.uid) is not None:
            continue
        partner = model.names.get(local_partner(chan.name) or "")
        if chan.name.endswith(";2") and partner in call.channels:
            continue                  # the ;1 half stands for the pair
        extension = peer_extension(chan.name)
        phone = call.direction != OUTBOUND and is_internal(extension, model.max_digits)
        leg = model._open_leg(call, extension) if phone else None
        leg = leg or model._new_leg(call, chan.uid, extension, phone, "", call.queue)
        if leg is not None:
            model._add_device(call, leg, chan, primary=True)
    for leg in list(call.legs.values()):
        if leg.state != "ringing":
            continue
        if any(model.chans[uid].state == "Up" for uid in leg.devices if uid in model.chans):
            model._answer(call, leg, now)
        else:
            model._emit_ringing(call, leg)


def _vanish(model, seen, now, known_before=None):
    """Channels we knew that the list no longer has hung up while we were away."""
    for call in list(model.calls.values()):
        alive = [c for c in call.channels.values() if c.alive]
        gone = [c for c in alive if c.uid not in seen and (known_before is None or c.uid in known_before)]
        if gone and len(gone) == len(alive):
            call.gap = True           # how it ended is unknown: unanswered is "lost", not "missed"
        for chan in gone:
            model._gone(chan, "", now)


def consult_leg(model, call, uid, name, now):
    """The leg an attended transfer hands the caller to (AttendedTransfer TransferTarget*).

    With AMI Atxfer the consultation runs inside the call (06b: the target is the Local pair
    whose ;2 dialled 104); when a phone dials the colleague itself it is a call of its own,
    and its target joins this one.
    """
    leg = call.leg_of(uid)
    if leg is not None:
        return leg
    partner = model.names.get(local_partner(name) or "")
    for leg in reversed(call.legs.values()):
        if leg.dialer and leg.dialer in (uid, partner) and leg.state != "stopped":
            return leg
    chan = model.chans.get(uid)
    if chan is None or chan.call == call.linkedid:
        return None
    return _adopt(model, call, chan, now)


def _adopt(model, call, chan, now):
    other = model.calls.get(chan.call)
    partner = model.chans.get(model.names.get(local_partner(chan.name) or "", ""))
    for moving in [c for c in (chan, partner) if c is not None]:
        if other is not None:
            other.channels.pop(moving.uid, None)
            other.device_leg.pop(moving.uid, None)
            other.caller.discard(moving.uid)
        call.channels[moving.uid] = moving
        moving.call = call.linkedid
    leg = model._new_leg(call, chan.uid, peer_extension(chan.name), True, "", None)
    if leg is not None:
        model._add_device(call, leg, chan, primary=True)
        leg.state, leg.connected = "answered", True
    if other is not None and not any(c.alive for c in other.channels.values()):
        model._end(other, now)
    return leg


def snapshot(model):
    """Plain data for debugging (`crmagi` logs, tests); not a stable format."""
    calls = {}
    for linkedid, call in model.calls.items():
        calls[linkedid] = {
            "direction": call.direction, "did": call.did, "queue": call.queue, "holder": call.holder,
            "answered": list(call.answered), "recordings": list(call.recordings),
            "channels": {c.uid: "%s %s%s" % (c.name, c.state, "" if c.alive else " (hung up)")
                         for c in call.channels.values()},
            "legs": [{"leg_id": leg.leg_id, "extension": leg.extension, "state": leg.state, "queue": leg.queue,
                      "phone": leg.phone, "devices": sorted(leg.devices)} for leg in call.legs.values()]}
    return {"calls": calls, "agents": {agent: ext for agent, (_, ext) in model.agents.logged.items()},
            "bridges": {bridge: sorted(members) for bridge, members in model.bridges.items()},
            "size": model.size()}


def _uid_order(uid):
    """Uniqueids are ``<epoch>.<counter>``: creation order, so a Local ;1 comes before its ;2."""
    epoch, _, counter = (uid or "").partition(".")
    if epoch.isdigit() and counter.isdigit():
        return (0, int(epoch), int(counter), "")
    return (1, 0, 0, uid or "")
