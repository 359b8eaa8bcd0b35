"""Tier c: click-to-call through the real Asterisk 22.10.1 peer and real MariaDB.

A browser's websocket message goes to crmagi's popup server; crmagi Originates on the peer,
which rings the user's phone (the fixture's phones: 101 answers after 2 s, 102 never answers,
103 is busy), then dials the number through ``from-internal`` -- the fixture's normal outbound
dialplan, whose ``outgoing`` AGI reads crmagi's click mark.  The Call must land on the record
that was clicked although another contact carries the same number, assigned to the user.
"""
import json
import time

import pytest
import websocket

from agi.app import App
from crmsync.calls import CallStore
from peer_asterisk import AsteriskPeer, free_port
from test_end_to_end import SEED, app_config, call, rows, seeded, wait_for
from webpush import auth

SECRET = "c2c-peer-secret-0123456789abcdef0123456789"
ORIGIN = "http://crm.test"
CLICKED = "c2c-contact-clicked-0000000000000001"
NEWER = "c2c-contact-newer-00000000000000002"     # same number, newer: the lookup would pick this one
NUMBER = "030 987654"                               # the fixture's pstn answers it after 2 s
SEED_C2C = SEED + [
    "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Clara', 'Clicked', '%s', 'seed_max_id', 0, '2026-11-01 10:00:00')" % (CLICKED, NUMBER),
    "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Nora', 'Newer', '%s', 'seed_max_id', 0, '2026-11-20 10:00:00')" % (NEWER, NUMBER),
]


@pytest.fixture(scope="module")
def peer():
    port = free_port()
    asterisk = AsteriskPeer(agi_port=port)
    try:
        yield asterisk
    finally:
        asterisk.stop()


@pytest.fixture
def app(crm_url, tmp_path, peer):
    engine = seeded(crm_url, SEED_C2C)
    cfg = app_config(crm_url, tmp_path, peer.ami_port,
                     agi={"listen": "127.0.0.1:%d" % peer.agi_port, "timeout": "2"},
                     ami={"originate_channel": "Local/{exten}@phones", "originate_timeout": "6"},
                     webpush={"secret": SECRET, "listen": "127.0.0.1:0", "allowed_origins": ORIGIN})
    application = App(cfg).start()
    application.ami.connected.wait(10)
    wait_for(lambda: application.ami.connected.is_set(), timeout=10)
    application.engine_for_test = engine
    try:
        yield application
    finally:
        application.stop(timeout=1)
        engine.dispose()
        peer.wait_channels_gone(timeout=30)


def dial(app, user_id, number=NUMBER, module="Contacts", record=CLICKED):
    """A tab of ``user_id`` clicks ``number``: the dial_status messages until a final one,
    with the seconds after the click each arrived."""
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % app.popups.server.address[1], origin=ORIGIN,
                                     timeout=5)
    ws.send(json.dumps({"type": "hello", "token": auth.mint(SECRET, user_id, time.time(), 600), "tab": "t",
                        "visible": True, "focused": True}))
    assert json.loads(ws.recv())["type"] == "welcome"
    start = time.monotonic()
    ws.send(json.dumps({"type": "dial", "number": number, "module": module, "record": record, "ref": "k1"}))
    seen = []
    ws.settimeout(40)
    try:
        while not seen or seen[-1]["state"] not in ("refused", "failed", "ended"):
            message = json.loads(ws.recv())
            if message["type"] == "dial_status":
                message["after"] = time.monotonic() - start
                seen.append(message)
    finally:
        ws.close()
    return seen


def states(seen):
    return [(m["state"], m["reason"]) for m in seen]


def test_click_rings_101_then_dials_out_and_the_call_is_on_the_clicked_contact(app):
    seen = dial(app, "seed_sally_id")
    assert seen[0]["state"] == "accepted" and seen[0]["after"] < 1.0, seen
    assert states(seen) == [("accepted", ""), ("ringing", ""), ("connecting", ""), ("connecting", ""),
                            ("connected", ""), ("ended", "hangup")], seen
    assert all(m["ref"] == "k1" for m in seen)
    print("click-to-call over the websocket: %s" % [(m["state"], round(m["after"] * 1000)) for m in seen])
    db = app.engine_for_test
    call_id = CallStore.call_id_for("", seen[0]["call"])          # the channel id we chose is the linkedid
    row = call(db, call_id, status="Held")
    assert (row["parent_type"], row["parent_id"], row["direction"]) == ("Contacts", CLICKED, "Outbound")
    assert row["assigned_user_id"] == "seed_sally_id"
    assert row["duration_minutes"] >= 1 or row["duration_hours"] >= 1
    links = rows(db, "SELECT contact_id FROM calls_contacts WHERE call_id=:c AND deleted=0", c=call_id)
    assert links == [{"contact_id": CLICKED}]
    users = rows(db, "SELECT user_id FROM calls_users WHERE call_id=:c AND deleted=0", c=call_id)
    assert users == [{"user_id": "seed_sally_id"}]
    crmagi = rows(db, "SELECT extension, number FROM crmagi_calls WHERE call_id=:c", c=call_id)[0]
    assert crmagi == {"extension": "101", "number": "030987654"}


def test_102_never_answers(app):
    seen = dial(app, "seed_max_id")
    assert states(seen) == [("accepted", ""), ("ringing", ""), ("failed", "your_noanswer")], seen
    assert seen[-1]["text"] == "your phone was not answered"
    assert not rows(app.engine_for_test, "SELECT id FROM calls WHERE parent_id=:p", p=CLICKED)


def test_103_is_busy(app):
    seen = dial(app, "seed_will_id")
    assert states(seen)[0] == ("accepted", "") and states(seen)[-1] == ("failed", "your_busy"), seen
    assert seen[-1]["after"] < 5


def test_a_record_that_does_not_carry_the_number_is_not_linked(app):
    """The page's record is a hint: a contact without this number gets nothing; the lookup decides."""
    seen = dial(app, "seed_sally_id", record="e2e-contact-anna-000000000000000001")
    assert states(seen)[-1] == ("ended", "hangup"), seen
    row = call(app.engine_for_test, CallStore.call_id_for("", seen[0]["call"]), status="Held")
    assert (row["parent_type"], row["parent_id"]) == ("Contacts", NEWER)


def test_a_user_logged_in_as_an_agent_is_rung_through_agentrequest(app, peer):
    """Sally's phone 101 logs in as app_agent_pool agent 1001 (it sits off-hook in AgentLogin):
    her click reaches that phone through AgentRequest(1001), not by ringing 101 again."""
    app.ami.action("Originate", [("Channel", "Local/1001@agent-login/n"), ("Application", "Wait"),
                                 ("Data", "60"), ("CallerID", '"Sally Bronsen" <101>'), ("Async", "true")])
    wait_for(lambda: app.live.model.agents.logged.get("1001", (0, 0))[1] == "101", timeout=10)
    time.sleep(5.5)             # a freshly logged-in agent counts as busy for 5 s (fixture surprise 11)
    try:
        seen = dial(app, "seed_sally_id")
        for _ in range(3):
            # Under load (CI, 2026-12-06) the busy window outlasted the 5.5 s once: AgentRequest
            # refused at once (failed after 0.05 s).  Asterisk's window, not crmagi, so try again.
            if states(seen)[-1] != ("failed", "your_noanswer") or seen[-1]["after"] > 1.0:
                break
            time.sleep(2)
            seen = dial(app, "seed_sally_id")
        assert seen[0]["text"].startswith("calling your phone agent 1001"), seen
        assert ("connected", "") in states(seen), seen
        row = call(app.engine_for_test, CallStore.call_id_for("", seen[0]["call"]))
        assert (row["parent_id"], row["assigned_user_id"]) == (CLICKED, "seed_sally_id")
    finally:
        app.ami.action("AgentLogoff", [("Agent", "1001")])
