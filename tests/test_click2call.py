"""Tier a/b: click-to-call -- the number and caller-ID rules, the mark the outgoing AGI trusts,
the progress read from the recorded Originates of a real Asterisk 22.10.1 (07a answered, 07b
not answered, 07c busy), and the refusals of the request itself."""
import json

import gevent
import pytest
from gevent.event import Event

from agi.ami import clickmark, originate
from agi.ami.click2call import ClickToCall
from agi.config import load
from agi.errors import AmiActionFailed
from agi.ami.originate_progress import Watch
from crmlocale import catalogues
from crmsync.models import Caller, LookupResult, User
from test_callmodel import load as load_ami
from webpush import auth

PATTERN = load(None, environ={}).ami.originate_pattern


@pytest.mark.parametrize("raw, number", [
    ("(932) 683-4187", "9326834187"), ("tel:+49 (30) 111-111", "+4930111111"), (" 004930987654 ", "004930987654"),
    ("101", "101"), ("+1.650.253.0000", "+16502530000"),
])
def test_a_number_is_reduced_to_digits_and_a_leading_plus(raw, number):
    assert originate.dial_number(raw, PATTERN) == number


@pytest.mark.parametrize("raw", ["", "12", "030 555 x12", "1-800-FLOWERS", "+49+30", "1" * 21, "١٢٣٤٥",
                                 "101&PJSIP/999", "101,1", "s@from-internal", None, "*67 555 1234"])
def test_what_is_not_a_number_to_dial_is_refused(raw):
    with pytest.raises(originate.Refused):
        originate.dial_number(raw, PATTERN)


def test_the_pattern_is_the_admins():
    assert originate.dial_number("0049 30 1", r"00[0-9]+") == "0049301"
    with pytest.raises(originate.Refused, match="originate_pattern"):
        originate.dial_number("+4930111111", r"00[0-9]+")


def test_the_phone_shows_the_callee_and_the_number_stays_the_users():
    assert originate.caller_id("Anna O'Neil", "004930987654", "101") == '"Anna O\'Neil 004930987654" <101>'
    assert originate.caller_id('Evil" <999>\r\nAction: x', "5551234", "101") == '"Evil 999Action: x 5551234" <101>'
    assert originate.caller_id("", "5551234", "101") == '"5551234" <101>'
    assert len(originate.caller_id("x" * 200, "5551234", "101")) == originate.MAX_CALLERID_NAME + 8


def test_the_first_leg_rings_the_users_phone_or_the_phone_an_agent_is_logged_in_from():
    logged = {"1001": "101"}
    assert originate.first_leg("105", "PJSIP/{exten}", logged, "agent-request") == ("PJSIP/105", "105")
    # the user's extension is the agent id, or the phone the agent logged in from: AgentRequest
    for extension in ("1001", "101"):
        target = originate.first_leg(extension, "PJSIP/{exten}", logged, "agent-request")
        assert target.channel == "Local/1001@agent-request/n" and "1001" in target.phone
    assert originate.destination("1001", "from-internal", logged, "agent-request") == ("agent-request", "1001")
    assert originate.destination("1002", "from-internal", logged, "agent-request") == ("from-internal", "1002")


def test_the_originate_action():
    headers = originate.originate_headers(originate.Target("PJSIP/101", "101"), "from-internal", "004930987654",
                                          '"Anna 004930987654" <101>', 30, "c2c-1", [("CRM_CLICK", "a.b"),
                                                                                      ("BAD", "x,y")])
    assert headers == [("Channel", "PJSIP/101"), ("Context", "from-internal"), ("Exten", "004930987654"),
                       ("Priority", "1"), ("CallerID", '"Anna 004930987654" <101>'), ("Timeout", "30000"),
                       ("Async", "true"), ("ChannelId", "c2c-1"), ("Variable", "CRM_CLICK=a.b")]


# ---------------------------------------------------------------------- the mark
MARK = clickmark.Mark("seed_sally_id", "101", "004930987654", "Contacts", "c-1", "Anna O'Neil", 2000)


def test_a_mark_round_trips_and_has_no_comma():
    text = clickmark.mint("k" * 32, MARK)
    assert "," not in text and text.isascii()
    assert clickmark.verify("k" * 32, text, 1999) == MARK
    assert clickmark.verify("k" * 32, text, 2000) == MARK


def test_a_forged_tampered_or_expired_mark_is_none():
    text = clickmark.mint("k" * 32, MARK)
    payload, signature = text.split(".")
    other = clickmark.mint("k" * 32, MARK._replace(user_id="1"))
    assert clickmark.verify("k" * 32, text, 2001) is None                       # expired
    assert clickmark.verify("j" * 32, text, 1000) is None                       # another key
    assert clickmark.verify("k" * 32, other.split(".")[0] + "." + signature, 1000) is None
    flipped = signature[:-1] + ("1" if signature[-1] == "0" else "0")
    assert clickmark.verify("k" * 32, payload + "." + flipped, 1000) is None
    for junk in ("", None, "abc", "a.b", text + "é", 5, "x" * 5000):
        assert clickmark.verify("k" * 32, junk, 1000) is None
    assert clickmark.verify("", text, 1000) is None
    # a popup token signed with the same secret is not a mark
    assert clickmark.verify("k" * 32, auth.mint("k" * 32, "1", 1000, 600), 1000) is None


def test_a_mark_with_wrong_types_is_none():
    import base64
    import hashlib
    import hmac
    data = dict(MARK._asdict(), user_id=5)
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    sig = hmac.new(b"k" * 32, b"crmagi-click:" + payload.encode(), hashlib.sha256).hexdigest()
    assert clickmark.verify("k" * 32, payload + "." + sig, 1000) is None


# ---------------------------------------------------------------------- progress from the recordings
def progress_of(name, action_id, uniqueid, number="004930987654", phone="101"):
    watch = Watch(action_id, uniqueid, number, phone)
    seen = [watch.feed(msg) for msg in load_ami(name)]
    return [(p.state, p.reason) for p in seen if p is not None], watch


def test_07a_answered_click_to_call_goes_ringing_connecting_connected_ended():
    states, watch = progress_of("07a-click-to-call", "c2c-101-0001", "1795699288.68")
    assert states == [("ringing", ""), ("connecting", ""), ("connecting", ""), ("connected", ""),
                      ("ended", "hangup")]
    assert watch.done and watch.last.text == "call ended"


def test_07b_your_phone_not_answered():
    states, _ = progress_of("07b-click-to-call-noanswer", "c2c-102-0001", "1795699300.72", phone="102")
    assert states == [("ringing", ""), ("failed", "your_noanswer")]


def test_07c_your_phone_busy():
    states, watch = progress_of("07c-click-to-call-busy", "c2c-103-0001", "1795699312.74", phone="103")
    assert states == [("ringing", ""), ("failed", "your_busy")]
    assert watch.last.text == "your phone is busy"


def test_a_failed_originate_is_matched_by_its_action_id_only():
    """07b's OriginateResponse names the dial string and Uniqueid <unknown>: another click's
    watch must not take it."""
    states, _ = progress_of("07b-click-to-call-noanswer", "ami-9", "other-uid", phone="102")
    assert states == []


def test_the_numbers_failures_on_the_second_leg():
    """07a's events with the second leg's DialEnd rewritten as Asterisk reports BUSY and NOANSWER."""
    for status, reason in (("BUSY", "number_busy"), ("NOANSWER", "number_noanswer"),
                           ("CHANUNAVAIL", "number_unreachable")):
        watch = Watch("c2c-101-0001", "1795699288.68", "004930987654", "101")
        out = []
        for msg in load_ami("07a-click-to-call"):
            if msg.event == "DialEnd" and msg.get("Channel"):
                msg.headers[:] = [(k, status if k == "DialStatus" else v) for k, v in msg.headers]
                msg._first["DialStatus"] = status
            out.append(watch.feed(msg))
        assert [p.reason for p in out if p is not None][-1] == reason


# ---------------------------------------------------------------------- the request
class Tab:
    def __init__(self, user_id, language=""):
        self.user_id = user_id
        self.sent = []
        self.language = catalogues.language(language)

    def send(self, text):
        self.sent.append(json.loads(text))

    def say(self, text):            # webpush.hub.Tab's: the user's language
        return self.language.say(text)


class Client:
    def __init__(self, fail=None, during=None):
        self.connected = Event()
        self.connected.set()
        self.actions = []
        self.fail = fail
        self.during = during          # (action_id, channel id) -> what the AMI reader does before the reply
        self.ids = iter(range(1, 1000))

    def new_action_id(self):
        return "ami-%d" % next(self.ids)

    def action(self, name, headers, action_id=None):
        if self.fail:
            raise AmiActionFailed(self.fail)
        self.actions.append((name, dict(headers), action_id))
        if self.during:
            self.during(action_id, dict(headers)["ChannelId"])


class Agents:
    logged = {}


class Model:
    agents = Agents()


ANNA = Caller("Contacts", "c-1", "Anna O'Neil", None, None, "phone_work", "+49 30 987654", "e164")


class Directory:
    def __init__(self):
        self.users = {"u1": User("u1", "sally", "Sally Bronsen", "101"), "u2": User("u2", "max", "Max J", None)}

    def user(self, user_id):
        return self.users.get(user_id)

    def user_by_extension(self, ext):
        return next((u for u in self.users.values() if u.extension == ext), None)

    def record_with_number(self, module, record_id, number):
        return ANNA if (module, record_id, number) == ("Contacts", "c-1", "004930987654") else None

    def lookup(self, number):
        return LookupResult("unknown", number)


def click(service, user_id="u1", language="", **message):
    tab = Tab(user_id, language)
    service._request(tab, message.get("ref", "r1"), dict({"number": "004930987654"}, **message))
    return tab.sent


def service(client=None, per_minute=6):
    settings = load(None, environ={}, overrides={"ami": {"originate_per_minute": str(per_minute)}}).ami
    return ClickToCall(settings, client or Client(), Model(), Directory(), "k" * 32, wall=lambda: 1000)


def test_an_accepted_click_rings_the_users_own_phone_with_the_checked_record_in_the_mark():
    svc = service()
    sent = click(svc, module="Contacts", record="c-1")
    assert [m["state"] for m in sent] == ["accepted"] and sent[0]["ref"] == "r1"
    (name, headers, action_id), = svc.client.actions
    assert name == "Originate" and headers["Channel"] == "PJSIP/101" and headers["Exten"] == "004930987654"
    assert headers["CallerID"] == '"Anna O\'Neil 004930987654" <101>' and headers["ChannelId"] == sent[0]["call"]
    mark = clickmark.verify("k" * 32, headers["Variable"].split("=", 1)[1], 1000)
    assert (mark.user_id, mark.extension, mark.module, mark.record_id) == ("u1", "101", "Contacts", "c-1")
    assert svc.by_action[action_id] == headers["ChannelId"]


def test_a_record_that_does_not_carry_the_number_is_not_put_in_the_mark():
    svc = service()
    assert click(svc, module="Contacts", record="c-2")[0]["state"] == "accepted"
    mark = clickmark.verify("k" * 32, svc.client.actions[0][1]["Variable"].split("=", 1)[1], 1000)
    assert (mark.module, mark.record_id) == ("", "")


@pytest.mark.parametrize("user, message, reason", [
    ("u2", {}, "no extension"), ("nobody", {}, "not an active CRM user"),
    ("u1", {"number": "0800 CALL ME"}, "not a phone number"), ("u1", {"number": "12"}, "originate_pattern"),
])
def test_refusals_say_why(user, message, reason):
    svc = service()
    sent = click(svc, user, **message)
    assert sent[0]["state"] == "refused" and reason in sent[0]["text"] and not svc.client.actions


def test_the_page_hears_it_in_the_users_language():
    """The clicking user's SuiteCRM language (the tab's, set at admission) is the page's."""
    assert click(service(), language="ru_RU")[0]["text"] == "звоним на ваш телефон 101…"
    assert click(service(), "u2", language="de_DE")[0]["text"] == \
        "Ihr CRM-Benutzer hat keine Durchwahl: bitten Sie einen Administrator, sie einzutragen"
    assert click(service(), "u2")[0]["text"] == "your CRM user has no extension: ask an administrator to set it"


def test_without_the_ami_connection_or_permission_it_is_refused():
    client = Client()
    client.connected.clear()
    assert "not connected" in click(service(client))[0]["text"]
    sent = click(service(Client(fail="Permission denied")))
    assert sent[0]["state"] == "refused" and "write = originate" in sent[0]["text"]


def test_one_call_at_a_time_and_a_rate_limit_per_user():
    svc = service(per_minute=3)
    assert click(svc)[0]["state"] == "accepted"
    assert "already being rung" in click(svc)[0]["text"]
    for followed in list(svc.watches.values()):
        followed.watch.state = "ended"
    assert click(svc)[0]["state"] == "accepted"
    for followed in list(svc.watches.values()):
        followed.watch.state = "ended"
    assert click(svc)[0]["state"] == "accepted"
    assert "too many calls" in click(svc)[0]["text"]
    assert click(svc, "u9")[0]["text"] == "you are not an active CRM user"


def replay_07c(svc, action_id, uid, upto=None):
    """07c's events as if this click had placed that call (its ids rewritten)."""
    for msg in load_ami("07c-click-to-call-busy")[:upto]:
        for key in ("Uniqueid", "DestUniqueid", "ActionID"):
            new = {"1795699312.74": uid, "c2c-103-0001": action_id}.get(msg.get(key))
            if new:
                msg.headers[:] = [(k, new if k == key else v) for k, v in msg.headers]
                msg._first[key] = new
        svc.on_event(msg)


def test_progress_reaches_the_tab_that_clicked_and_the_watch_is_forgotten_at_the_end():
    svc = service()
    tab = Tab("u1")
    svc._request(tab, "r7", {"number": "004930987654"})
    replay_07c(svc, svc.client.actions[0][2], tab.sent[0]["call"])
    assert [(m["state"], m["reason"]) for m in tab.sent] == [("accepted", ""), ("ringing", ""),
                                                             ("failed", "your_busy")]
    assert all(m["ref"] == "r7" for m in tab.sent) and not svc.watches and not svc.by_action


def test_events_read_before_the_originate_response_reach_the_page_after_accepted():
    """Seen on the real peer: DialBegin came in the same read as the response."""
    svc = service()
    svc.client.during = lambda action_id, uid: replay_07c(svc, action_id, uid)
    tab = Tab("u1")
    svc._request(tab, "r8", {"number": "004930987654"})
    assert [m["state"] for m in tab.sent] == ["accepted", "ringing", "failed"] and not svc.watches


def test_request_answers_in_its_own_greenlet():
    svc = service()
    tab = Tab("u1")
    svc.request(tab, {"type": "dial", "number": "004930987654", "ref": "r2"})
    gevent.sleep(0.01)
    assert tab.sent[0]["state"] == "accepted" and tab.sent[0]["ref"] == "r2"


def test_a_number_the_dialplan_does_not_route_fails_with_that_reason():
    """07a up to the user's answer, then the Hangup of our channel without any Dial of its own."""
    watch = Watch("c2c-101-0001", "1795699288.68", "+4930987654", "101")
    events = load_ami("07a-click-to-call")
    answered = next(i for i, m in enumerate(events) if m.event == "OriginateResponse")
    for msg in events[:answered + 1]:
        watch.feed(msg)
    hangup = next(m for m in events if m.event == "Hangup" and m.get("Uniqueid") == "1795699288.68")
    progress = watch.feed(hangup)
    assert (progress.state, progress.reason) == ("failed", "not_dialled") and "no route" in progress.text


def test_a_transfer_to_a_logged_in_agent_id_goes_through_agentrequest():
    from agi.ami.live import Transfers

    class LiveModel:
        agents = Agents()

        @staticmethod
        def caller_channel(linkedid):
            return "PJSIP/trunk-00000001"

    client = Client()
    client.action = lambda name, headers, action_id=None: client.actions.append((name, dict(headers))) or \
        type("R", (), {"response": "Success", "get": lambda self, key: None})()
    LiveModel.agents.logged = {"1001": ("uid-1", "101")}
    try:
        transfers = Transfers(LiveModel(), client, "from-internal", "agent-request")
        assert transfers("L1", "1001")[0] and transfers("L1", "104")[0]
    finally:
        LiveModel.agents.logged = {}
    assert [(h["Context"], h["Exten"]) for _, h in client.actions] == [("agent-request", "1001"),
                                                                      ("from-internal", "104")]


def test_a_crm_that_cannot_answer_costs_the_link_not_the_call():
    svc = service()

    def down(*args):
        raise OSError("CRM database unavailable")
    svc.directory.record_with_number = svc.directory.lookup = down
    assert click(svc, module="Contacts", record="c-1")[0]["state"] == "accepted"
    headers = svc.client.actions[0][1]
    mark = clickmark.verify("k" * 32, headers["Variable"].split("=", 1)[1], 1000)
    assert (mark.module, mark.record_id) == ("", "") and headers["CallerID"] == '"004930987654" <101>'
