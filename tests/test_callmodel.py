"""Tier a: the live call model (agi/ami/callmodel.py) on every AMI stream recorded from Asterisk 22.

Each scenario in shared/fixtures/asterisk is replayed through a CallModel configured as the
recording dialplan needs, and the domain events are compared with what an operator expects.
The recordings have no event timestamps (timestampevents = no), so the clock is rebuilt
from what carries time: a Uniqueid is ``<epoch>.<n>`` (channel creation) and each Cdr gives a
channel's answer time and billable seconds, so its Hangup sits at answer + billsec, which is
Asterisk's own arithmetic.  Between those anchors time stands still.
"""
import calendar
import glob
import os
import random
import time
from collections import Counter

import pytest

from agi.ami import amiproto, callmodel
from agi.ami.callmodel import Answered, CallModel, Ended, Recording, Ringing, RingingStopped, Transferred
from agi.ami.channels import MAX_CHANNELS, MAX_LEGS
from conftest import ASTERISK

STREAMS = sorted(glob.glob(str(ASTERISK / "*.ami.txt")))
INBOUND = ("from-pstn", "queue-in", "agent-in", "from-pstn-agidown", "from-pstn-agiurl")
OUTBOUND = ("from-internal",)
TTL = 3600.0
REC = ("rec",)


def ring(ext):
    return ("ring", ext)


def answer(ext):
    return ("answer", ext)


def end(outcome, talk=0, *answered):
    return ("end", outcome, talk, answered)


# What an operator sees, scenario by scenario.  ("rec",) is the MixMonitor recording.
EXPECTED = {
    "01-inbound-answered": [REC, ring("101"), answer("101"), end("answered", 5, "101")],
    "02a-inbound-noanswer": [REC, ring("102"), ("stop", "102", "no_answer"), end("missed")],
    "02b-inbound-busy": [REC, ring("103"), ("stop", "103", "busy"), end("busy")],
    "03a-inbound-no-callerid": [REC, ring("104"), answer("104"), end("answered", 5, "104")],
    "03b-inbound-anonymous": [REC, ring("104"), answer("104"), end("answered", 5, "104")],
    "03c-inbound-unknown": [REC, ring("104"), answer("104"), end("answered", 5, "104")],
    "03d-inbound-hostile-callerid": [REC, ring("104"), answer("104"), end("answered", 5, "104")],
    "04a-outbound-answered": [REC, answer("101"), end("answered", 5, "101")],
    "04b-outbound-busy": [REC, end("busy")],
    "05a-queue-ringall": [REC, ring("101"), ring("102"), answer("101"), ("stop", "102", "answered_elsewhere"),
                          end("answered", 5, "101")],
    "05b-queue-rrmemory": [REC, ring("102"), ("stop", "102", "no_answer"), ring("101"), answer("101"),
                           end("answered", 6, "101")],
    "06a-blind-transfer": [REC, ring("101"), answer("101"), ("transfer", "101", "104", "blind"), ring("104"),
                           answer("104"), end("answered", 13, "101", "104")],
    "06b-attended-transfer": [REC, ring("101"), answer("101"), ring("104"), ("transfer", "101", "104", "attended"),
                              answer("104"), end("answered", 13, "101", "104")],
    "06c-redirect": [REC, ring("101"), answer("101"), ("transfer", "101", "104", "redirect"), ring("104"),
                     answer("104"), end("answered", 14, "101", "104")],
    "07a-click-to-call": [REC, answer("101"), end("answered", 8, "101")],
    "07b-click-to-call-noanswer": [end("noanswer")],
    "07c-click-to-call-busy": [end("busy")],
    "08a-agent-login-request": [REC, ring("1001"), answer("1001"), end("answered", 6, "1001")],
    "08b-agent-queue": [REC, ring("1001"), answer("1001"), end("answered", 6, "1001")],
    "09-restart-before": [REC, ring("101"), answer("101"), end("answered", 1, "101")],
    "09-restart-after": [],
    "10a-agi-caller-hangs-up": [end("missed")],
    "10b-agi-server-down": [ring("104"), answer("104"), end("answered", 5, "104")],
    "10c-agi-connect-timeout": [ring("104"), answer("104"), end("answered", 5, "104")],
    "10d-agi-slow-server": [ring("104"), answer("104"), end("answered", 5, "104")],
    "10e-agi-errors-and-quoting": [ring("104"), answer("104"), end("answered", 5, "104")],
}


# ---------------------------------------------------------------------- helpers
def parse(data):
    _, rest = amiproto.split_banner(data)
    frames, _ = amiproto.split_frames(rest)
    return [amiproto.unescape(amiproto.parse_frame(frame)) for frame in frames]


def load(name):
    return parse((ASTERISK / (name + ".ami.txt")).read_bytes())


def scenario(path):
    return os.path.basename(path)[:-len(".ami.txt")]


def _seconds(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def recorded_clock(messages):
    """A ``now`` per message from Uniqueid epochs and Cdr answer/billsec (see the module doc)."""
    ends, answers = {}, {}
    for msg in messages:
        if msg.event != "Cdr":
            continue
        if msg.get("AnswerTime"):
            stop = _seconds(msg.get("AnswerTime")) + int(msg.get("BillableSeconds"))
            answers.setdefault(msg.get("DestinationChannel"), _seconds(msg.get("AnswerTime")))
        else:
            stop = _seconds(msg.get("StartTime")) + int(msg.get("Duration"))
        ends[msg.get("Channel")] = max(stop, ends.get(msg.get("Channel"), 0))
    now, clock = 0.0, []
    for msg in messages:
        anchor = None
        if msg.event == "Newchannel":
            anchor = float(msg.get("Uniqueid").split(".")[0])
        elif msg.event == "Hangup":
            anchor = ends.get(msg.get("Channel"))
        elif msg.event == "DialEnd" and msg.get("DialStatus") == "ANSWER":
            anchor = answers.get(msg.get("DestChannel"))
        now = max(now, anchor or 0.0)
        clock.append(now)
    return clock


def model(**changes):
    settings = dict(inbound_contexts=INBOUND, outbound_contexts=OUTBOUND, ignore_contexts=(), call_ttl=TTL)
    settings.update(changes)
    return CallModel(**settings)


def replay(m, messages, clock=None):
    clock = clock or recorded_clock(messages)
    return [event for msg, now in zip(messages, clock) for event in m.feed(msg, now)]


def short(event):
    if isinstance(event, Ringing):
        return ring(event.extension)
    if isinstance(event, RingingStopped):
        return ("stop", event.extension, event.reason)
    if isinstance(event, Answered):
        return answer(event.extension)
    if isinstance(event, Transferred):
        return ("transfer", event.from_extension, event.to_extension, event.kind)
    if isinstance(event, Recording):
        return REC
    return end(event.outcome, event.talk_seconds, *event.answered_extensions)


def without_talk(events):
    return [short(e)[:2] + short(e)[3:] if isinstance(e, Ended) else short(e) for e in events]


def check_well_formed(events):
    """Every Ringing is closed once (RingingStopped or Answered of its leg); one Ended per call, last."""
    opened, closed, ended = set(), set(), set()
    for event in events:
        assert event.linkedid not in ended, "event after Ended: %r" % (event,)
        key = (event.linkedid, getattr(event, "leg_id", None))
        if isinstance(event, Ringing):
            assert key not in opened, "two Ringing for one leg: %r" % (event,)
            opened.add(key)
        elif isinstance(event, RingingStopped):
            assert key in opened and key not in closed, "RingingStopped without an open Ringing: %r" % (event,)
            closed.add(key)
        elif isinstance(event, Answered) and key in opened:
            assert key not in closed, "Ringing closed twice: %r" % (event,)
            closed.add(key)
        elif isinstance(event, Ended):
            ended.add(event.linkedid)
    assert opened == closed, "Ringing never closed: %r" % (opened - closed)
    assert {e.linkedid for e in events} == ended, "a call without Ended"


def assert_empty(m):
    size = m.size()
    assert {k: v for k, v in size.items() if k not in ("agents", "members")} == dict.fromkeys(
        ("calls", "channels", "names", "bridges", "foreign", "tombstones"), 0), size
    assert size["agents"] <= 2 and size["members"] <= 1, size


def msg(event, **headers):
    return amiproto.Message([("Event", event)] + [(k, str(v)) for k, v in headers.items()])


def chan(prefix, name, uid, linkedid, context="", exten="", state="Ring", cid=""):
    return {prefix + "Channel": name, prefix + "Uniqueid": uid, prefix + "Linkedid": linkedid,
            prefix + "Context": context, prefix + "Exten": exten, prefix + "ChannelStateDesc": state,
            prefix + "CallerIDNum": cid or "<unknown>", prefix + "CallerIDName": "<unknown>"}


def first(messages, event, **match):
    return next(i for i, m in enumerate(messages)
                if m.event == event and all(m.get(k) == v for k, v in match.items()))


# ---------------------------------------------------------------------- every scenario
def test_every_recording_has_an_expectation():
    assert {scenario(p) for p in STREAMS} == set(EXPECTED)


@pytest.mark.parametrize("path", STREAMS, ids=scenario)
def test_scenario_events(path):
    m = model()
    events = replay(m, parse(open(path, "rb").read()))
    assert [short(e) for e in events] == EXPECTED[scenario(path)]
    check_well_formed(events)
    assert len(m) == 0                           # every call in the recording ended
    m.expire(recorded_clock(load(scenario(path)))[-1] + TTL + 1)
    assert_empty(m)


def _hangup_answeredtime(name):
    """ANSWEREDTIME as the recorded hangup-handler AGI received it (agi_arg_2)."""
    path = ASTERISK / (name + ".agi.txt")
    if not path.exists():
        return None
    text = path.read_text()
    if "FastAGI session" not in text or "/hangup" not in text:
        return None
    session = text[text.rindex("/hangup"):]
    value = session.split("agi_arg_2:", 1)[1].split("\n", 1)[0].strip()
    return int(value) if value else None


@pytest.mark.parametrize("path", STREAMS, ids=scenario)
def test_talk_seconds_agree_with_asterisk(path):
    messages = parse(open(path, "rb").read())
    ended = [e for e in replay(model(), messages) if isinstance(e, Ended)]
    reported = [int(m.get("TalkTime")) for m in messages if m.event == "AgentComplete"]
    answeredtime = _hangup_answeredtime(scenario(path))
    for event in ended:
        if reported:                             # Queue(): Asterisk's TalkTime is the truth
            assert event.talk_seconds == sum(reported)
        elif answeredtime is not None:           # the Cdr clock has 1 s resolution
            assert abs(event.talk_seconds - answeredtime) <= 1
        elif event.outcome != "answered":
            assert event.talk_seconds == 0


def test_inbound_answered_in_full():
    events = replay(model(), load("01-inbound-answered"))
    linkedid, did = "1795699120.0", "4930123400"
    assert events == [
        Recording(linkedid, "/var/spool/asterisk/monitor/in-20261126-131840-1795699120.1.wav"),
        Ringing(linkedid, "1795699120.2", "101", "+4930111111", 'Anna "Annie" O\'Neil', did, "Inbound", None),
        Answered(linkedid, "101", "1795699120.2", None),
        Ended(linkedid, "answered", 5, ("101",), did, "Inbound")]


@pytest.mark.parametrize("name, number, caller_name", [
    ("03a-inbound-no-callerid", "", ""),                       # AMI <unknown> is no caller ID
    ("03b-inbound-anonymous", "anonymous", "Anonymous"),
    ("03c-inbound-unknown", "Unknown", "Unknown"),             # a real caller ID, not a placeholder
    ("03d-inbound-hostile-callerid", "+4930999999", 'Robert\'); DROP TABLE calls;-- "Bobby"'),
])
def test_caller_id_reaches_the_popup_as_data(name, number, caller_name):
    rings = [e for e in replay(model(), load(name)) if isinstance(e, Ringing)]
    assert [(r.caller_number, r.caller_name, r.did) for r in rings] == [(number, caller_name, "4930123400")]


def test_ringall_queue_one_popup_per_member_closed_once():
    events = replay(model(), load("05a-queue-ringall"))
    rings = [e for e in events if isinstance(e, Ringing)]
    assert [(r.extension, r.queue, r.did) for r in rings] == [("101", "support", "4930700100"),
                                                             ("102", "support", "4930700100")]
    answered = [e for e in events if isinstance(e, Answered)]
    stopped = [e for e in events if isinstance(e, RingingStopped)]
    assert [(a.leg_id, a.queue) for a in answered] == [(rings[0].leg_id, "support")]
    assert [(s.leg_id, s.reason) for s in stopped] == [(rings[1].leg_id, "answered_elsewhere")]


def test_outbound_answer_names_the_calling_phone():
    events = replay(model(), load("04a-outbound-answered"))
    assert events[1] == Answered("1795699195.28", "101", "1795699195.28", None)
    assert events[-1].direction == "Outbound" and events[-1].did == ""


# ---------------------------------------------------------------------- agents
def _relogin(name, login_channel):
    """The same scenario with the agent logged in from a real phone, PJSIP/201."""
    data = (ASTERISK / (name + ".ami.txt")).read_bytes().replace(login_channel.encode(), b"PJSIP/201-0000abcd")
    return parse(data)


@pytest.mark.parametrize("name, login", [("08a-agent-login-request", "Local/1001@agent-login-00000026;2"),
                                         ("08b-agent-queue", "Local/1001@agent-login-00000028;2")])
def test_agent_rings_on_the_phone_it_logged_in_from(name, login):
    events = replay(model(), _relogin(name, login))
    assert [short(e) for e in events if not isinstance(e, Recording)] == [
        ring("201"), answer("201"), end("answered", 6, "201")]


def test_agent_map_names_the_phone_when_no_login_was_seen():
    messages = [m for m in load("08b-agent-queue") if m.event not in ("AgentLogin", "Agents")]
    events = replay(model(agent_map={"1001": "301"}), messages)
    assert [short(e) for e in events if isinstance(e, (Ringing, Answered))] == [ring("301"), answer("301")]


# ---------------------------------------------------------------------- direction
def test_ignored_context_reports_nothing():
    assert replay(model(ignore_contexts=("from-pstn",)), load("01-inbound-answered")) == []


def test_internal_call_reports_nothing():
    data = (ASTERISK / "04a-outbound-answered.ami.txt").read_bytes().replace(b"004930987654", b"102")
    assert replay(model(), parse(data)) == []


def test_crm_direction_wins_over_the_contexts():
    messages = load("01-inbound-answered")
    at = first(messages, "Newchannel", Channel="Local/4930123400@from-pstn-00000000;2") + 1
    forced = msg("VarSet", Channel="Local/4930123400@from-pstn-00000000;2", Uniqueid="1795699120.1",
                 Linkedid="1795699120.0", Variable="CRM_DIRECTION", Value="Inbound")
    events = replay(model(inbound_contexts=()), messages[:at] + [forced] + messages[at:])
    assert [short(e) for e in events] == EXPECTED["01-inbound-answered"]
    assert events[-1].did == "4930123400"


# ---------------------------------------------------------------------- idempotency and bounds
@pytest.mark.parametrize("path", STREAMS, ids=scenario)
def test_every_event_twice_changes_nothing(path):
    messages = parse(open(path, "rb").read())
    clock = recorded_clock(messages)
    m = model()
    once = replay(m, messages, clock)
    assert replay(m, messages, [now + 60 for now in clock]) == []    # the whole stream again
    twice = model()
    doubled = [e for msg_, now in zip(messages, clock) for _ in range(2) for e in twice.feed(msg_, now)]
    assert doubled == once                                           # each message delivered twice


def test_expire_ends_a_call_ami_never_ended():
    messages = load("01-inbound-answered")
    cut = first(messages, "BridgeEnter", Uniqueid="1795699120.1") + 1
    clock = recorded_clock(messages)
    m = model()
    replay(m, messages[:cut], clock)
    assert len(m) == 1 and m.expire(clock[cut] + TTL - 1) == []
    events = m.expire(clock[cut] + TTL + 1)
    assert [(e.outcome, e.answered_extensions) for e in events] == [("lost", ("101",))]
    assert_empty(m)


def test_expire_closes_the_popup_of_a_ringing_call():
    messages = load("02a-inbound-noanswer")
    cut = first(messages, "DialState", DestChannel="Local/102@phones-00000003;1") + 1
    m = model()
    replay(m, messages[:cut])
    assert [short(e) for e in m.expire(1e10)] == [("stop", "102", "hangup"), end("lost")]
    assert_empty(m)


def test_a_call_never_grows_without_bound():
    m, events = model(), []
    events += m.feed(msg("Newchannel", **chan("", "PJSIP/trunk-00000001", "9.1", "9.1", "from-pstn", "4930123400",
                                             cid="+4930111111")), 0)
    for n in range(3 * MAX_CHANNELS):
        dest = chan("Dest", "PJSIP/%d-%08x" % (1000 + n, n + 2), "9.%d" % (n + 2), "9.1")
        caller = chan("", "PJSIP/trunk-00000001", "9.1", "9.1", "from-pstn", "4930123400")
        events += m.feed(msg("DialBegin", DialString=str(1000 + n), **caller, **dest), n)
        events += m.feed(msg("DialEnd", DialStatus="NOANSWER", **caller, **dest), n)
        events += m.feed(msg("Hangup", Cause="19", **chan("", dest["DestChannel"], dest["DestUniqueid"], "9.1")), n)
    state = m.snapshot()["calls"]["9.1"]
    assert len(state["legs"]) <= MAX_LEGS and len(state["channels"]) <= MAX_CHANNELS
    events += m.feed(msg("Hangup", Cause="16", **chan("", "PJSIP/trunk-00000001", "9.1", "9.1")), 1e4)
    check_well_formed(events + m.expire(1e9))
    assert_empty(m)


def test_tombstones_are_bounded(monkeypatch):
    monkeypatch.setattr(callmodel, "MAX_TOMBSTONES", 3)
    m = model()
    for path in STREAMS:
        replay(m, parse(open(path, "rb").read()))
    assert len(m.tombstones) == 3


@pytest.mark.parametrize("seed", range(40))
def test_shuffled_truncated_or_lossy_streams_never_raise_nor_leak(seed):
    rng = random.Random(seed)
    messages = parse(open(rng.choice(STREAMS), "rb").read())
    kind = seed % 4
    if kind == 0:
        rng.shuffle(messages)
    elif kind == 1:
        messages = messages[:rng.randrange(len(messages) + 1)]
    elif kind == 2:
        messages = [m for m in messages if rng.random() > 0.3]
    else:                                        # local reordering, as across two AMI writers
        for i in range(len(messages) - 1):
            if rng.random() < 0.3:
                messages[i], messages[i + 1] = messages[i + 1], messages[i]
    m, now, events = model(), 0.0, []
    for message in messages:
        now += rng.random()
        events += m.feed(message, now)
    events += m.expire(now + TTL + 1)
    check_well_formed(events)
    assert_empty(m)


# ---------------------------------------------------------------------- restart and reconnect
def test_restart_ends_calls_and_the_reconnect_duplicates_nothing():
    before, after = load("09-restart-before"), load("09-restart-after")
    m = model()
    events = replay(m, before) + replay(m, after, [1e10] * len(after))
    assert [short(e) for e in events] == EXPECTED["09-restart-before"]
    assert m.load_channels([], 1e10) == [] and len(m) == 0


def test_a_call_born_while_the_channel_list_was_sent_is_not_taken_for_gone():
    """Events keep flowing while CoreShowChannels is answered: a channel the snapshot could not
    contain (unknown when the list was asked for) stays alive; one known before it, and missing
    from the list, hung up while we were away."""
    messages = load("01-inbound-answered")
    ringing = messages[:first(messages, "DialBegin") + 1]
    fresh = model()
    replay(fresh, ringing, [0.0] * len(ringing))
    assert fresh.load_channels([], 1.0, known_before=set()) == [] and len(fresh) == 1
    stale = model()
    replay(stale, ringing, [0.0] * len(ringing))
    ended = stale.load_channels([], 1.0, known_before=set(stale.chans))
    assert "Ended" in [type(e).__name__ for e in ended] and len(stale) == 0


def test_shutdown_ends_a_call_whose_hangups_never_came():
    before = load("09-restart-before")
    cut = first(before, "Hangup")
    m = model()
    events = replay(m, before[:cut] + [before[first(before, "Shutdown")]])
    assert [short(e) for e in events][-2:] == [answer("101"), end("answered", 0, "101")]
    assert replay(m, load("09-restart-after")) == [] and len(m) == 0


def channel_list(messages):
    """The CoreShowChannel events Asterisk would list after ``messages``."""
    live, dead = {}, set()
    for message in messages:
        for prefix in ("", "Dest"):
            uid, name = message.get(prefix + "Uniqueid"), message.get(prefix + "Channel")
            if not uid or not name or uid in dead or uid == "none" or message.event == "OriginateResponse":
                continue
            row = live.setdefault(uid, {"Channel": name, "Uniqueid": uid, "BridgeId": ""})
            for key in ("ChannelStateDesc", "Context", "Exten", "CallerIDNum", "CallerIDName", "Linkedid"):
                if message.get(prefix + key):
                    row[key] = message.get(prefix + key)
        uid = message.get("Uniqueid")
        if message.event == "Hangup":
            live.pop(uid, None)
            dead.add(uid)
        elif message.event in ("BridgeEnter", "BridgeLeave") and uid in live:
            live[uid]["BridgeId"] = message.get("BridgeUniqueid") if message.event == "BridgeEnter" else ""
    return [msg("CoreShowChannel", **row) for row in live.values()]


@pytest.mark.parametrize("path", STREAMS, ids=scenario)
def test_reconnect_without_a_gap_duplicates_nothing(path):
    messages = parse(open(path, "rb").read())
    clock = recorded_clock(messages)
    whole = without_talk(replay(model(), messages, clock))
    for cut in range(0, len(messages), 7):
        m = model()
        events = replay(m, messages[:cut], clock)
        events += m.load_channels(channel_list(messages[:cut]), clock[cut])
        events += [e for msg_, now in zip(messages[cut:], clock[cut:]) for e in m.feed(msg_, now)]
        assert Counter(without_talk(events)) == Counter(whole), cut


def _cut(messages, event, **match):
    return first(messages, event, **match) + 1


def test_fresh_model_reports_the_phone_still_ringing():
    messages = load("01-inbound-answered")
    cut = _cut(messages, "DialState", DestChannel="Local/101@phones-00000001;1")
    m = model()
    assert m.load_channels(channel_list(messages[:cut]), 100.0) == [
        Ringing("1795699120.0", "1795699120.2", "101", "+4930111111", 'Anna "Annie" O\'Neil', "4930123400",
                "Inbound", None)]
    rest = replay(m, messages[cut:], [100.0] * len(messages[cut:]))
    assert [short(e) for e in rest] == [answer("101"), end("answered", 0, "101")]


def test_fresh_model_reports_the_phone_talking():
    messages = load("01-inbound-answered")
    cut = _cut(messages, "BridgeEnter", Uniqueid="1795699120.1")
    m = model()
    assert m.load_channels(channel_list(messages[:cut]), 100.0) == [Answered("1795699120.0", "101", "1795699120.2",
                                                                             None)]
    assert [short(e) for e in replay(m, messages[cut:], [105.0] * 200)] == [end("answered", 5, "101")]


def test_fresh_model_mid_ringall_closes_the_loser_once():
    messages = load("05a-queue-ringall")
    cut = _cut(messages, "DialState", DestChannel="Local/102@phones-00000014;1")
    m = model()
    events = m.load_channels(channel_list(messages[:cut]), 0.0) + replay(m, messages[cut:])
    assert [short(e)[:3] for e in events] == [ring("101"), ring("102"), answer("101"),
                                              ("stop", "102", "answered_elsewhere"), ("end", "answered", 5)]
    check_well_formed(events)


def test_same_model_after_a_gap_reports_only_what_changed():
    messages = load("01-inbound-answered")
    ringing = _cut(messages, "DialState", DestChannel="Local/101@phones-00000001;1")
    talking = _cut(messages, "BridgeEnter", Uniqueid="1795699120.1")
    clock = recorded_clock(messages)
    m = model()
    events = replay(m, messages[:ringing], clock)
    assert m.load_channels(channel_list(messages[:talking]), clock[talking]) == [
        Answered("1795699120.0", "101", "1795699120.2", None)]
    rest = [e for msg_, now in zip(messages[talking:], clock[talking:]) for e in m.feed(msg_, now)]
    assert [short(e) for e in rest] == [end("answered", 5, "101")]
    check_well_formed(events + [Answered("1795699120.0", "101", "1795699120.2", None)] + rest)


def test_call_that_ended_during_the_gap_is_lost():
    messages = load("02a-inbound-noanswer")
    m = model()
    replay(m, messages[:_cut(messages, "DialState", DestChannel="Local/102@phones-00000003;1")])
    assert [short(e) for e in m.load_channels([], 1e6)] == [("stop", "102", "hangup"), end("lost")]
    assert len(m) == 0


@pytest.mark.parametrize("seed", range(20))
def test_reconnect_after_any_gap_stays_well_formed(seed):
    rng = random.Random(seed)
    messages = parse(open(rng.choice(STREAMS), "rb").read())
    clock = recorded_clock(messages)
    lost_from = rng.randrange(len(messages))
    back_at = rng.randrange(lost_from, len(messages) + 1)
    m = model() if seed % 2 else None
    events = replay(m, messages[:lost_from], clock) if m else []
    m = m or model()                            # odd seeds keep the model, even ones start afresh
    events += m.load_channels(channel_list(messages[:back_at]), clock[min(back_at, len(clock) - 1)])
    events += [e for msg_, now in zip(messages[back_at:], clock[back_at:]) for e in m.feed(msg_, now)]
    events += m.expire(1e12)
    check_well_formed(events)
    assert_empty(m)


# ---------------------------------------------------------------------- production shapes
def _trunk(state="Ring"):
    return chan("", "PJSIP/trunk-00000001", "7.1", "7.1", "from-pstn", "4930123400", state, "+4930111111")


def _phone(prefix, name, uid, linkedid="7.1", state="Ring"):
    return chan(prefix, name, uid, linkedid, "from-internal", "101", state)


def test_two_devices_of_one_extension_make_one_popup():
    a, b = _phone("Dest", "PJSIP/101-00000002", "7.2"), _phone("Dest", "PJSIP/101-00000003", "7.3")
    stream = [msg("Newchannel", **_trunk()),
              msg("DialBegin", DialString="101", **_trunk(), **a),
              msg("DialBegin", DialString="101", **_trunk(), **b),
              msg("DialEnd", DialStatus="ANSWER", **_trunk(), **a),
              msg("DialEnd", DialStatus="CANCEL", **_trunk(), **b),
              msg("Hangup", Cause="26", **_phone("", "PJSIP/101-00000003", "7.3")),
              msg("Hangup", Cause="16", **_phone("", "PJSIP/101-00000002", "7.2")),
              msg("Hangup", Cause="16", **_trunk())]
    events = replay(model(), stream, list(range(len(stream))))
    assert [short(e) for e in events] == [ring("101"), answer("101"), end("answered", 3, "101")]
    assert events[0].leg_id == events[1].leg_id == "7.2"


def test_local_queue_member_dialling_the_phone_counts_once():
    member = chan("Dest", "Local/101@from-queue-00000001;1", "7.2", "7.1", "from-queue", "101")
    half = chan("", "Local/101@from-queue-00000001;2", "7.3", "7.1", "from-queue", "101")
    phone = _phone("Dest", "PJSIP/101-00000004", "7.4")
    stream = [msg("Newchannel", **_trunk()), msg("QueueCallerJoin", Queue="sales", **_trunk()),
              msg("Newchannel", **{k[4:]: v for k, v in member.items()}), msg("Newchannel", **half),
              msg("AgentCalled", Interface="Local/101@from-queue/n", Queue="sales", **_trunk(), **member),
              msg("DialBegin", DialString="Local/101@from-queue/n", **_trunk(), **member),
              msg("DialBegin", DialString="PJSIP/101", **half, **phone),
              msg("DialEnd", DialStatus="ANSWER", **half, **phone),
              msg("DialEnd", DialStatus="ANSWER", **_trunk(), **member),
              msg("AgentConnect", Interface="Local/101@from-queue/n", Queue="sales", **_trunk(), **member)]
    stream += [msg("Hangup", Cause="16", **chan("", n, u, "7.1")) for n, u in (
        ("PJSIP/101-00000004", "7.4"), ("Local/101@from-queue-00000001;2", "7.3"),
        ("Local/101@from-queue-00000001;1", "7.2"), ("PJSIP/trunk-00000001", "7.1"))]
    events = replay(model(), stream, list(range(len(stream))))
    assert [short(e)[:3] for e in events] == [ring("101"), answer("101"), ("end", "answered", 5)]  # from the pickup
    assert events[0].queue == events[1].queue == "sales"


def test_attended_transfer_from_the_phone_follows_the_consultation_call():
    """The phone dials the colleague itself: the consultation is a call of its own (linkedid 7.3)."""
    first_leg, consult, target = (_phone("Dest", "PJSIP/101-00000002", "7.2"),
                                  chan("", "PJSIP/101-00000003", "7.3", "7.3", "from-internal", "104", "Up", "101"),
                                  chan("Dest", "PJSIP/104-00000004", "7.4", "7.3", "from-internal", "104"))
    stream = [msg("Newchannel", **_trunk()), msg("DialBegin", DialString="101", **_trunk(), **first_leg),
              msg("DialEnd", DialStatus="ANSWER", **_trunk(), **first_leg),
              msg("Newchannel", **consult), msg("DialBegin", DialString="104", **consult, **target),
              msg("DialEnd", DialStatus="ANSWER", **consult, **target),
              msg("AttendedTransfer", Result="Success", OrigTransfererUniqueid="7.2", SecondTransfererUniqueid="7.3",
                  TransfereeUniqueid="7.1", TransferTargetUniqueid="7.4", TransferTargetChannel="PJSIP/104-00000004",
                  DestType="Bridge")]
    stream += [msg("Hangup", Cause="16", **chan("", n, u, "7.1")) for n, u in (
        ("PJSIP/101-00000002", "7.2"), ("PJSIP/101-00000003", "7.3"), ("PJSIP/104-00000004", "7.4"),
        ("PJSIP/trunk-00000001", "7.1"))]
    m = model()
    events = replay(m, stream, list(range(len(stream))))
    assert [short(e)[:2] + short(e)[3:] if isinstance(e, Ended) else short(e) for e in events] == [
        ring("101"), answer("101"), ("transfer", "101", "104", "attended"), answer("104"),
        ("end", "answered", ("101", "104"))]
    assert len(m) == 0


# ---------------------------------------------------------------------- wiring
def test_built_from_the_ami_section():
    from agi.config import AmiSettings
    settings = AmiSettings(inbound_contexts=INBOUND, outbound_contexts=OUTBOUND, call_ttl=TTL)
    events = replay(CallModel.from_settings(settings), load("05a-queue-ringall"))
    assert [short(e) for e in events] == EXPECTED["05a-queue-ringall"]


def test_snapshot_is_plain_data_mid_call():
    import json
    messages = load("06b-attended-transfer")
    m = model()
    replay(m, messages[:first(messages, "AttendedTransfer")])
    state = json.loads(json.dumps(m.snapshot()))
    legs = state["calls"]["1795699252.54"]["legs"]
    assert [(leg["extension"], leg["state"]) for leg in legs] == [("101", "answered"), ("104", "answered")]
