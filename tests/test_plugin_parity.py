"""Issue #11 section 3, parity: a recorded Asterisk call written as a plugin scenario
(tests/plugin_scenarios/, what another PBX would send) gives the same CRM rows and the
same popup sequence as the recorded AGI sessions + AMI stream of that call.

Both runs use `crmagi serve`'s App with popups on, against one MariaDB database with the
SuiteCRM schema; the popup sequence is what the popup service published on its bus
(ring, stop, answered, transferred, ended, with the phones and users they name).
"""
import gevent
import pytest

from agi.app import App
from agi.plugin.client import PluginClient, load_scenario, replay
from conftest import REPO
from crmsync.apikeys import KeyStore
from test_end_to_end import app_config, rows, seeded, wait_for
from test_live_end_to_end import SEED_LIVE, owner_and_users, run_call

SCENARIOS = REPO / "tests" / "plugin_scenarios"
WEB = {"secret": "parity-test-secret-0123456789abcdef", "listen": "127.0.0.1:0"}
# Generous deadlines: the popup's first event carries what the lookup knew at the deadline, and
# this test compares content, not speed (a busy CI box may take more than 0.5 s for a lookup).
SLOW_BOX = {"agi": {"timeout": "5"}, "crm": {"query_timeout": "10"}}
ROW = ("direction", "status", "parent_type", "parent_id", "assigned_user_id")
MINE = ("outcome", "answered_extension", "talk_seconds", "transfer_extension", "transfers")


@pytest.fixture(scope="module")
def db(crm_url_module):
    engine = seeded(crm_url_module, SEED_LIVE)
    yield engine
    engine.dispose()


def recording_bus(app):
    """The popup service's bus events, as (event, who) pairs in order."""
    seen = []
    publish = app.popups.service.bus.publish

    def record(event):
        seen.append(event)
        publish(event)
    app.popups.service.bus.publish = record
    return seen


def popup_sequence(events):
    out = []
    for event in events:
        kind = event["e"]
        if kind == "info":
            out.append(("info", event.get("owner")))
        elif kind == "ring":
            out.append(("ring", event["ext"], event.get("queue")))
        elif kind == "stop":
            out.append(("stop", event["ext"], event["reason"]))
        elif kind in ("answered",):
            out.append((kind, event["ext"]))
        elif kind == "transferred":
            out.append((kind, event["to"]))
        elif kind == "ended":
            out.append(("ended",))
    return out


def outcome(db, call_id):
    call = wait_for(lambda: rows(db, "SELECT * FROM calls WHERE id=:c AND status<>'Planned'", c=call_id))[0]
    mine = rows(db, "SELECT * FROM crmagi_calls WHERE call_id=:c", c=call_id)[0]
    return ({key: call[key] for key in ROW}, {key: mine[key] for key in MINE}, owner_and_users(db, call_id))


def through_asterisk(db, url, tmp_path, scenario):
    watched = []
    app, call_id, _ = run_call(db, url, tmp_path / "ami", scenario, webpush=WEB, **SLOW_BOX,
                               on_start=lambda app: watched.append(recording_bus(app)))
    return outcome(db, call_id), popup_sequence(watched[0])


def through_plugin(db, url, tmp_path, scenario):
    app = App(app_config(url, tmp_path / "plugin", webpush=WEB, **SLOW_BOX)).start()
    try:
        seen = recording_bus(app)
        _, key = KeyStore(app.engine, "default").create("parity", "events")
        client = PluginClient("ws://127.0.0.1:%d/plugin" % app.popups.server.address[1], key).connect()
        answers = []
        for wait, message in load_scenario(SCENARIOS / (scenario + ".json")):
            if message["event"] == "end":       # as run_call lets the AMI stream settle before the hangup AGI
                wait_for(lambda: app.plugin_effects.pending() == 0, timeout=10)
                gevent.sleep(0.3)
            answers.extend(answer for _, answer in replay(client, [(wait, message)], sleep=gevent.sleep))
        client.close()
        assert {answer["type"] for answer in answers} == {"ack"}, answers
        wait_for(lambda: app.writer.pending() == 0)
        gevent.sleep(0.3)
        return outcome(db, answers[0]["call_id"]), popup_sequence(seen)
    finally:
        app.stop(timeout=1)


@pytest.mark.parametrize("scenario", sorted(path.stem for path in SCENARIOS.glob("*.json")))
def test_a_plugin_call_gives_the_rows_and_popups_of_the_same_asterisk_call(db, crm_url_module, tmp_path,
                                                                           scenario):
    (row_a, mine_a, users_a), popups_a = through_asterisk(db, crm_url_module, tmp_path, scenario)
    (row_p, mine_p, users_p), popups_p = through_plugin(db, crm_url_module, tmp_path, scenario)
    assert row_p == row_a
    assert users_p == users_a
    assert mine_p == mine_a
    assert popups_p == popups_a
