"""Popups driven by the recorded AMI streams through the whole App (tier c): the right desks,
the losers of a ring-all queue closed, transfers followed.  Browsers are websocket clients here;
tests/test_browser_popups.py does the same in Chromium."""
import json
import time

import gevent
import pytest
import websocket

from agi.app import App
from asterisk_replay import FakeAsterisk, load_scenario
from fake_ami import FakeAmi, recorded_events
from test_end_to_end import app_config, wait_for
from test_live_end_to_end import db  # noqa: F401  (the seeded database fixture)
from webpush import auth

SECRET = "e2e-popup-secret-0123456789abcdef"
ORIGIN = "http://crm.e2e.test"
USERS = {"101": "seed_sally_id", "102": "seed_max_id", "103": "seed_will_id", "104": "seed_chris_id"}


def popup_app(url, tmp_path, ami_port):
    # Generous deadlines (as tests/test_plugin_parity.py): these tests check which desks see what,
    # not speed, and a query of the shared MariaDB on a loaded box took more than the 2 s
    # [crm] query_timeout of app_config: the popup then lacked its lookup, or came too late.
    return App(app_config(url, tmp_path, ami_port, agi={"timeout": "5"}, crm={"query_timeout": "10"},
                          ami={"transfer_context": "transfer"},
                          webpush={"listen": "127.0.0.1:0", "secret": SECRET, "allowed_origins": ORIGIN})).start()


class Tab:
    def __init__(self, app, user_id):
        self.ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % app.popups.server.address[1],
                                              origin=ORIGIN, timeout=5)
        self.ws.send(json.dumps({"type": "hello", "token": auth.mint(SECRET, user_id, time.time(), 600),
                                 "visible": True, "focused": True}))
        self.messages = []
        assert self.next()["type"] == "welcome"

    def next(self, timeout=5.0):
        self.ws.settimeout(timeout)
        message = json.loads(self.ws.recv())
        self.messages.append(message)
        return message

    def drain(self, over=True, timeout=15.0):
        """(type, state) of the popup messages.  ``over``: first wait (up to ``timeout``) until the
        call is over for this tab (its popup closed, or told the call ended), then take what
        follows within 0.3 s; a tab that must get nothing (``over`` False) gets the 0.3 s only."""
        deadline = time.monotonic() + timeout
        while over and not self._over() and time.monotonic() < deadline:
            try:
                self.next(timeout=max(0.01, deadline - time.monotonic()))
            except websocket.WebSocketTimeoutException:
                break
        try:
            while True:
                self.next(timeout=0.3)
        except websocket.WebSocketTimeoutException:
            pass
        return [(m["type"], m.get("state")) for m in self.messages if m["type"] in ("popup", "update", "close")]

    def _over(self):
        return any(m["type"] == "close" or (m["type"], m.get("state")) == ("update", "ended") for m in self.messages)


def play(app, ami, scenario):
    """AGI incoming, the recorded AMI stream, then the hangup AGI (as tests/test_live_end_to_end.py)."""
    fake = FakeAsterisk(load_scenario(scenario))
    incoming = fake.run_session(0, app.agi.address)
    assert app.ami.connected.wait(5)
    ami.events = recorded_events(scenario)
    app.ami._sock.close()                 # the stream starts on a fresh login
    wait_for(lambda: not ami.events, timeout=10)
    wait_for(lambda: app.live.pending() == 0, timeout=10)
    for index in range(1, len(fake.scenario.sessions)):
        fake.run_session(index, app.agi.address)
    gevent.sleep(0.5)
    return incoming.variables["CRM_CALL_ID"]


@pytest.fixture
def rig(db, crm_url, tmp_path):  # noqa: F811
    ami = FakeAmi().start()
    ami.pace = 0.005       # a popup is rendered from the CRM in a few ms; the recorded calls took seconds
    ami.stream_after = "CoreShowChannels"    # the call starts after the resync (the fake lists nothing)
    app = popup_app(crm_url, tmp_path, ami.port)
    yield app, ami
    app.stop(timeout=1)
    ami.stop()


def tabs(app, *extensions):
    return {ext: Tab(app, USERS[ext]) for ext in extensions}


def test_ring_all_queue_closes_the_losers_popup(rig):
    app, ami = rig
    open_tabs = tabs(app, "101", "102", "103")
    call_id = play(app, ami, "05a-queue-ringall")
    sally, max_, will = open_tabs["101"].drain(), open_tabs["102"].drain(), open_tabs["103"].drain(over=False)
    assert sally[:2] == [("popup", None), ("update", "answered")] and sally[-1] == ("update", "ended")
    assert max_ == [("popup", None), ("update", "answered_elsewhere"), ("close", None)]
    assert will == []                                           # not a member of the queue
    popup = next(m for m in open_tabs["101"].messages if m["type"] == "popup")
    assert popup["call"] == call_id


def test_hunt_queue_moves_the_popup_from_the_phone_that_gave_up(rig):
    app, ami = rig
    open_tabs = tabs(app, "101", "102")
    play(app, ami, "05b-queue-rrmemory")
    max_, sally = open_tabs["102"].drain(), open_tabs["101"].drain()
    assert max_[0] == ("popup", None) and max_[-1][0] == "close"
    assert sally[:2] == [("popup", None), ("update", "answered")]


@pytest.mark.parametrize("scenario", ["06a-blind-transfer", "06b-attended-transfer", "06c-redirect"])
def test_transfer_moves_the_popup_to_the_new_desk(rig, scenario):
    app, ami = rig
    open_tabs = tabs(app, "101", "104")
    play(app, ami, scenario)
    sally, chris = open_tabs["101"].drain(), open_tabs["104"].drain()
    assert sally[0] == ("popup", None) and ("update", "transferred") in sally and ("close", None) in sally
    assert chris and chris[0] == ("popup", None) and chris[-1] == ("update", "ended")
    html = next(m for m in open_tabs["104"].messages if m["type"] == "popup")["html"]
    assert "Erik Engel" in html          # the contact the caller matched (+49 30 555555), on the new desk


def test_click_to_transfer_redirects_the_callers_channel(rig):
    app, ami = rig
    sally = Tab(app, USERS["101"])
    fake = FakeAsterisk(load_scenario("06a-blind-transfer"))
    fake.run_session(0, app.agi.address)
    events = recorded_events("06a-blind-transfer")
    # Stop the stream right after 101 answered: the call is up and the popup on Sally's screen.
    answered = next(i for i, e in enumerate(events) if e.startswith(b"Event: BridgeEnter")) + 2
    assert app.ami.connected.wait(5)
    ami.events = events[:answered]
    app.ami._sock.close()
    wait_for(lambda: not ami.events, timeout=10)
    popup = next(m for m in iter(sally.next, None) if m["type"] == "popup")
    sally.ws.send(json.dumps({"type": "transfer", "call": popup["call"], "exten": "104"}))
    result = next(m for m in iter(sally.next, None) if m["type"] == "result")
    assert result["ok"], result
    sent = [a for a in ami.actions if a.get("Action") == "Redirect"]
    assert sent and sent[-1].get("Context") == "transfer" and sent[-1].get("Exten") == "104"
    assert sent[-1].get("Channel").startswith("Local/4930")      # the caller's leg, as in the recorded 06c
