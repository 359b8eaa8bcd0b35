"""Tier c: recorded AGI sessions and the recorded AMI stream of the same call, through the App,
against real MariaDB: the responsible user follows the call (answer, transfers)."""
import gevent
import pytest

from agi.app import App
from asterisk_replay import FakeAsterisk, load_scenario
from fake_ami import FakeAmi, recorded_events
from test_end_to_end import SEED, app_config, call, crmagi_row, rows, seeded, wait_for

CONTACT_555 = "e2e-contact-five-000000000000000005"     # +4930555555 calls in 06a-c, owner will (103)
SEED_LIVE = SEED + [
    "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Erik', 'Engel', '+49 30 555555', 'seed_will_id', 0, '2026-11-01 10:00:00')" % CONTACT_555,
    "DELETE FROM accounts WHERE id='e2e-account-spree-00000000000000001'",
]


@pytest.fixture
def db(crm_url):
    engine = seeded(crm_url, SEED_LIVE)
    yield engine
    engine.dispose()


def live_app(url, tmp_path, ami_port, **sections):
    return App(app_config(url, tmp_path, ami_port, **sections)).start()


def run_call(db, crm_url, tmp_path, scenario, drop_after=None, on_start=None, **sections):
    """AGI incoming, then the AMI stream (optionally with a restart in the middle), then AGI hangup.
    ``on_start(app)`` runs before the call (e.g. to watch the popup bus)."""
    ami = FakeAmi().start()
    app = live_app(crm_url, tmp_path, ami.port, **sections)
    if on_start is not None:
        on_start(app)
    try:
        fake = FakeAsterisk(load_scenario(scenario))
        incoming = fake.run_session(0, app.agi.address)
        call_id = incoming.variables["CRM_CALL_ID"]
        call(db, call_id)
        ami.events = recorded_events(scenario)
        ami.drop_after = drop_after
        app.ami.connected.wait(5)
        # the stream starts on a fresh login: reconnect so the fake streams the recording
        app.ami._sock.close()
        wait_for(lambda: not ami.events, timeout=10)
        wait_for(lambda: app.live.pending() == 0, timeout=10)
        gevent.sleep(0.3)
        for index in range(1, len(fake.scenario.sessions)):
            fake.run_session(index, app.agi.address)
        wait_for(lambda: app.writer.pending() == 0)
        return app, call_id, ami
    finally:
        app.stop(timeout=1)
        ami.stop()


def owner_and_users(db, call_id):
    owner = rows(db, "SELECT assigned_user_id FROM calls WHERE id=:c", c=call_id)[0]["assigned_user_id"]
    users = sorted(r["user_id"] for r in rows(db, "SELECT user_id FROM calls_users WHERE call_id=:c AND deleted=0",
                                              c=call_id))
    return owner, users


@pytest.mark.parametrize("scenario", ["06a-blind-transfer", "06b-attended-transfer", "06c-redirect"])
def test_transfer_moves_the_call_to_the_new_user(db, crm_url, tmp_path, scenario):
    app, call_id, _ = run_call(db, crm_url, tmp_path, scenario)
    row = call(db, call_id, status="Held")
    assert row["parent_id"] == CONTACT_555
    owner, users = owner_and_users(db, call_id)
    assert owner == "seed_chris_id"                                  # 104 took the call over
    assert users == ["seed_chris_id", "seed_sally_id", "seed_will_id"]   # owner at start, 101, 104
    extra = crmagi_row(db, call_id)
    assert (extra["answered_extension"], extra["transfer_extension"], extra["transfers"]) == ("101", "104", 1)


def test_ring_all_queue_is_answered_by_the_member_who_picked_up(db, crm_url, tmp_path):
    app, call_id, _ = run_call(db, crm_url, tmp_path, "05a-queue-ringall")
    call(db, call_id, status="Held")
    owner, users = owner_and_users(db, call_id)
    assert owner == "seed_sally_id" and users == ["seed_sally_id"]     # 101 answered; 102 only rang
    assert crmagi_row(db, call_id)["answered_extension"] == "101"


def test_ami_restart_in_the_middle_changes_nothing_twice(db, crm_url, tmp_path):
    app, call_id, ami = run_call(db, crm_url, tmp_path, "06a-blind-transfer", drop_after=150)
    assert ami.connections >= 3                       # first login, our reconnect, the "restart"
    owner, users = owner_and_users(db, call_id)
    # will: the contact's owner at call start; sally (101) answered; chris (104) took it over
    assert owner == "seed_chris_id" and users == ["seed_chris_id", "seed_sally_id", "seed_will_id"]
    assert crmagi_row(db, call_id)["transfers"] == 1


@pytest.mark.parametrize("scenario, status, answered, owner", [
    ("01-inbound-answered", "Held", "101", "seed_sally_id"),
    ("02a-inbound-noanswer", "Not Held", None, "seed_max_id"),       # 102 rang, nobody answered
    ("02b-inbound-busy", "Not Held", None, "seed_will_id"),
    ("04a-outbound-answered", "Held", "101", "seed_sally_id"),       # outbound: the calling phone
    ("05b-queue-rrmemory", "Held", "101", "seed_sally_id"),          # 102 rang 5 s, 101 answered
    ("08b-agent-queue", "Held", "1001", "seed_sally_id"),            # agent 1001 (no CRM user)
])
def test_every_kind_of_call_ends_with_the_right_rows(db, crm_url, tmp_path, scenario, status, answered, owner):
    app, call_id, _ = run_call(db, crm_url, tmp_path, scenario)
    row = call(db, call_id, status=status)
    assert row["assigned_user_id"] == owner
    extra = crmagi_row(db, call_id)
    assert extra["answered_extension"] == answered and extra["transfers"] is None
