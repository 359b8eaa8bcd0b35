"""Tier c: the recorded Asterisk sessions replayed through `crmagi serve`'s App against real MariaDB.

The fake Asterisk sends the recorded bytes and answers as the recorded
Asterisk did; the assertions are on what SuiteCRM's History subpanel needs
(shared/docs/suitecrm.md section 4), not merely "a row exists".
"""
import time

import gevent
import pytest
from sqlalchemy import create_engine, text

from agi.app import App
from agi.config import load
from asterisk_replay import FakeAsterisk, load_scenario

CONTACT = "e2e-contact-anna-000000000000000001"    # +4930111111, owner sally (ext 101)
CONTACT_102 = "e2e-contact-bernd-00000000000000002"  # +4930222222, owner max (ext 102)
CONTACT_103 = "e2e-contact-carla-00000000000000003"  # +4930333333, owner will (ext 103)
ACCOUNT = "e2e-account-spree-00000000000000001"    # 030 555555, owner sally
LEAD = "e2e-lead-pstn-987654-000000000000001"      # 004930987654 (outbound target)
VIRTUAL = "crmagi-virtual-account"

SEED = [
    "UPDATE users SET phone_work='101' WHERE id='seed_sally_id'",
    "UPDATE users SET phone_work='102' WHERE id='seed_max_id'",
    "UPDATE users SET phone_work='103' WHERE id='seed_will_id'",
    "UPDATE users SET phone_work='104' WHERE id='seed_chris_id'",
    "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Anna', 'O''Neil', '+49 (30) 111-111', 'seed_sally_id', 0, '2026-11-01 10:00:00')" % CONTACT,
    "INSERT INTO contacts (id, first_name, last_name, phone_mobile, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Bernd', 'Brandt', '030 222222', 'seed_max_id', 0, '2026-11-01 10:00:00')" % CONTACT_102,
    "INSERT INTO contacts (id, first_name, last_name, phone_home, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Carla', 'Cortez', '0049 30 333333', 'seed_will_id', 0, '2026-11-01 10:00:00')" % CONTACT_103,
    "INSERT INTO accounts (id, name, phone_office, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Spreewald Logistik', '030 555555', 'seed_sally_id', 0, '2026-11-01 10:00:00')" % ACCOUNT,
    "INSERT INTO leads (id, first_name, last_name, phone_work, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', 'Dieter', 'Dorn', '+49 30 987654', 'seed_chris_id', 0, '2026-11-01 10:00:00')" % LEAD,
]

# The History subpanel query of a Contact (ForHistory: Held/Not Held, via calls_contacts).
HISTORY_CONTACT = """SELECT c.id FROM calls c JOIN calls_contacts cc ON cc.call_id=c.id AND cc.deleted=0
    WHERE cc.contact_id=:rid AND c.deleted=0 AND c.status IN ('Held','Not Held')"""
HISTORY_ACCOUNT = """SELECT c.id FROM calls c WHERE c.parent_type='Accounts' AND c.parent_id=:rid
    AND c.deleted=0 AND c.status IN ('Held','Not Held')"""


def seeded(url, statements):
    """An engine on the test database after running the seed statements."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    return engine


@pytest.fixture
def db(crm_url):
    engine = seeded(crm_url, SEED)
    yield engine
    engine.dispose()


# The dialplan contexts of the recorded Asterisk where outside calls arrive.
INBOUND = "from-pstn, queue-in, agent-in, from-pstn-agidown, from-pstn-agiurl"


def app_config(url, tmp_path, ami_port=None, **sections):
    """The config of a test App on port 0 (with the fake AMI at ``ami_port``); ``sections``
    adds or replaces keys of a section, e.g. ``webpush={"secret": ...}``."""
    overrides = {"crm": {"url": url, "query_timeout": "2"},
                 "agi": {"listen": "127.0.0.1:0", "spool": str(tmp_path / "spool.sqlite"), "flush_interval": "0.2"},
                 "lookup": {"default_region": "DE"}, "metrics": {"listen": "127.0.0.1:0"}}
    if ami_port is not None:
        overrides["ami"] = {"host": "127.0.0.1", "port": str(ami_port), "username": "crm", "secret": "crmsecret",
                            "inbound_contexts": INBOUND, "timeout": "2"}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load(None, environ={}, overrides=overrides)


def make_app(url, tmp_path, **agi):
    # A generous deadline: these tests check what is written, not speed (a loaded CI box may
    # take more than 0.5 s for the first lookup); the deadline tests pass their own.
    return App(app_config(url, tmp_path, agi=dict({"timeout": "3"}, **agi))).start()


@pytest.fixture
def app(db, crm_url, tmp_path):
    application = make_app(crm_url, tmp_path)
    yield application
    application.stop(timeout=1)


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        gevent.sleep(0.02)
    raise AssertionError("condition not met within %.1fs" % timeout)


def call(engine, call_id, status=None):
    def ready():
        found = rows(engine, "SELECT * FROM calls WHERE id=:id", id=call_id)
        return found if found and (status is None or found[0]["status"] == status) else None
    return wait_for(ready)[0]


def crmagi_row(engine, call_id):
    return rows(engine, "SELECT * FROM crmagi_calls WHERE call_id=:id", id=call_id)[0]


def replay(app, name):
    fake = FakeAsterisk(load_scenario(name))
    results = [fake.run_session(i, app.agi.address) for i in range(len(fake.scenario.sessions))]
    for result in results:
        assert result.server_closed and not result.pipelined and not result.timed_out
    return results


def test_inbound_answered_contact_lands_in_history(app, db):
    incoming, hangup = replay(app, "01-inbound-answered")
    v = incoming.variables
    assert v["CRM_STATUS"] == "found" and v["CRM_MODULE"] == "Contacts" and v["CRM_RECORD_ID"] == CONTACT
    assert v["CRM_OWNER_USER_ID"] == "seed_sally_id" and v["CRM_OWNER_EXTEN"] == "101"
    assert v["CRM_RECORD_NAME"] == "Anna O'Neil" and v["CALLERID(name)"] == "Anna O'Neil"
    assert incoming.elapsed < app.config.agi.timeout
    row = call(db, v["CRM_CALL_ID"], status="Held")
    assert (row["direction"], row["parent_type"], row["parent_id"]) == ("Inbound", "Contacts", CONTACT)
    assert row["assigned_user_id"] == "seed_sally_id" and row["deleted"] == 0
    assert (row["duration_hours"], row["duration_minutes"]) == (0, 1)        # 5 s talk, rounded up
    assert len(row["name"]) <= 50 and "+4930111111" in row["name"]
    assert row["date_end"] >= row["date_start"]
    assert rows(db, HISTORY_CONTACT, rid=CONTACT) == [{"id": v["CRM_CALL_ID"]}]
    users = rows(db, "SELECT user_id, accept_status FROM calls_users WHERE call_id=:id AND deleted=0",
                 id=v["CRM_CALL_ID"])
    assert users == [{"user_id": "seed_sally_id", "accept_status": "accept"}]
    extra = crmagi_row(db, v["CRM_CALL_ID"])
    assert extra["talk_seconds"] == 5 and extra["answered_extension"] == "101"
    assert extra["recording"] == "/var/spool/asterisk/monitor/in-20261126-131840-1795699120.1.wav"
    assert extra["linkedid"] == "1795699120.0" and extra["did"] == "4930123400"


def test_a_crm_reached_through_mariadbs_unix_socket_gets_its_calls(db, crm_url, tmp_path):
    """README's production settings: with MariaDB on the same host, the URL's ``unix_socket``
    (PyMySQL's) replaces TCP on loopback.  The lookup, the start and the finish all go that way:
    MariaDB lists the app's connections from ``localhost``, TCP ones from ``127.0.0.1:port``."""
    socket_path = rows(db, "SELECT @@socket AS s")[0]["s"]
    name = crm_url.rsplit("/", 1)[1]
    application = make_app("mysql+pymysql://root@localhost/%s?unix_socket=%s" % (name, socket_path), tmp_path)
    try:
        incoming, _ = replay(application, "01-inbound-answered")
        v = incoming.variables
        assert v["CRM_STATUS"] == "found" and v["CRM_RECORD_ID"] == CONTACT
        assert call(db, v["CRM_CALL_ID"], status="Held")["parent_id"] == CONTACT
        hosts = {r["host"] for r in rows(db, "SELECT host FROM information_schema.processlist WHERE db = :db",
                                         db=name)}
        assert "localhost" in hosts, hosts
    finally:
        application.stop(timeout=1)


@pytest.mark.parametrize("scenario, contact, dial_status", [
    ("02a-inbound-noanswer", CONTACT_102, "NOANSWER"),
    ("02b-inbound-busy", CONTACT_103, "BUSY"),
])
def test_missed_inbound_is_not_held_and_visible(app, db, scenario, contact, dial_status):
    incoming, _ = replay(app, scenario)
    call_id = incoming.variables["CRM_CALL_ID"]
    assert incoming.variables["CRM_RECORD_ID"] == contact
    row = call(db, call_id, status="Not Held")
    assert (row["duration_hours"], row["duration_minutes"]) == (0, 0)
    assert row["name"].startswith("Missed call")
    assert rows(db, HISTORY_CONTACT, rid=contact) == [{"id": call_id}]
    extra = crmagi_row(db, call_id)
    assert (extra["outcome"], extra["dial_status"], extra["talk_seconds"]) == ("missed", dial_status, None)


@pytest.mark.parametrize("scenario", ["03a-inbound-no-callerid", "03b-inbound-anonymous",
                                      "03c-inbound-unknown"])
def test_unidentified_callers_go_to_the_virtual_account(app, db, scenario):
    incoming, _ = replay(app, scenario)
    v = incoming.variables
    assert v["CRM_STATUS"] == "anonymous" and v["CRM_RECORD_ID"] == "" and v["CRM_OWNER_EXTEN"] == ""
    assert "CALLERID(name)" not in v
    row = call(db, v["CRM_CALL_ID"], status="Held")
    assert (row["parent_type"], row["parent_id"]) == ("Accounts", VIRTUAL)
    assert rows(db, HISTORY_ACCOUNT, rid=VIRTUAL) == [{"id": v["CRM_CALL_ID"]}]


def test_hostile_caller_id_is_data_not_sql(app, db):
    incoming, _ = replay(app, "03d-inbound-hostile-callerid")
    v = incoming.variables
    assert v["CRM_STATUS"] == "unknown"      # +4930999999 is not in the CRM
    row = call(db, v["CRM_CALL_ID"], status="Held")
    assert row["parent_id"] == VIRTUAL and "+4930999999" in row["name"]
    assert rows(db, "SELECT COUNT(*) AS n FROM contacts")[0]["n"] == 23       # 20 sample + 3 seeded: intact


def test_outbound_answered_to_a_lead_is_assigned_to_the_calling_extension(app, db):
    outgoing, _ = replay(app, "04a-outbound-answered")
    v = outgoing.variables
    assert v["CRM_STATUS"] == "found" and v["CRM_MODULE"] == "Leads" and v["CRM_RECORD_ID"] == LEAD
    row = call(db, v["CRM_CALL_ID"], status="Held")
    assert (row["direction"], row["parent_type"], row["parent_id"]) == ("Outbound", "Leads", LEAD)
    assert row["assigned_user_id"] == "seed_sally_id"                  # extension 101 placed the call
    links = rows(db, "SELECT lead_id FROM calls_leads WHERE call_id=:id AND deleted=0", id=v["CRM_CALL_ID"])
    assert links == [{"lead_id": LEAD}]


def test_outbound_to_unknown_number_is_logged_unlinked(app, db):
    outgoing, _ = replay(app, "04b-outbound-busy")
    v = outgoing.variables
    assert v["CRM_STATUS"] == "unknown"
    row = call(db, v["CRM_CALL_ID"], status="Not Held")
    assert row["parent_id"] is None and row["parent_type"] is None
    assert row["assigned_user_id"] == "seed_sally_id"
    assert crmagi_row(db, v["CRM_CALL_ID"])["outcome"] == "busy"


def test_queue_call_answered_without_dialstatus_is_held(app, db):
    incoming, _ = replay(app, "05a-queue-ringall")
    call_id = incoming.variables["CRM_CALL_ID"]
    call(db, call_id, status="Held")        # waits for the row to say Held
    extra = crmagi_row(db, call_id)
    assert extra["dial_status"] is None and extra["talk_seconds"] is not None


def test_same_call_twice_gives_one_row(app, db):
    scenario = load_scenario("01-inbound-answered")
    first = FakeAsterisk(scenario).run_session(0, app.agi.address)
    again = FakeAsterisk(scenario).run_session(0, app.agi.address)     # the dialplan ran the AGI twice
    call_id = first.variables["CRM_CALL_ID"]
    assert again.variables["CRM_CALL_ID"] == call_id
    call(db, call_id)
    gevent.sleep(0.2)
    assert len(rows(db, "SELECT id FROM calls WHERE id=:id", id=call_id)) == 1
    assert len(rows(db, "SELECT id FROM calls_contacts WHERE call_id=:id", id=call_id)) == 1


def test_crmagi_restart_mid_call_keeps_one_call(db, crm_url, tmp_path):
    scenario = load_scenario("01-inbound-answered")
    fake = FakeAsterisk(scenario)
    first = make_app(crm_url, tmp_path)
    incoming = fake.run_session(0, first.agi.address)
    first.stop(timeout=1)
    second = make_app(crm_url, tmp_path)
    try:
        fake.run_session(1, second.agi.address)
        row = call(db, incoming.variables["CRM_CALL_ID"], status="Held")
        assert row["parent_id"] == CONTACT
        assert len(rows(db, "SELECT id FROM calls WHERE parent_id=:p", p=CONTACT)) == 1
    finally:
        second.stop(timeout=1)


def test_caller_hangs_up_during_the_agi(app, db):
    fake = FakeAsterisk(load_scenario("10a-agi-caller-hangs-up"))
    result = fake.run_session(0, app.agi.address, hangup_after=0.0)
    assert result.server_closed and result.variables["CRM_STATUS"] == "found"
    call(db, result.variables["CRM_CALL_ID"])


def test_database_down_answers_in_time_and_the_call_is_written_later(db, crm_url, tmp_path):
    down = make_app("mysql+pymysql://root@127.0.0.1:1/suitecrm", tmp_path, timeout="0.3")
    fake = FakeAsterisk(load_scenario("01-inbound-answered"))
    try:
        incoming = fake.run_session(0, down.agi.address)
        assert incoming.variables["CRM_STATUS"] == "error" and incoming.variables["CRM_OWNER_EXTEN"] == ""
        assert incoming.elapsed < 0.3
        fake.run_session(1, down.agi.address)
        wait_for(lambda: down.writer.pending() == 2)
    finally:
        down.stop(timeout=1)
    up = make_app(crm_url, tmp_path)          # same spool file: the database is back
    try:
        row = call(db, incoming.variables["CRM_CALL_ID"], status="Held")
        assert row["parent_id"] == CONTACT    # looked up again when the CRM was back (#9)
        wait_for(lambda: up.writer.pending() == 0)
        assert len(rows(db, "SELECT id FROM calls WHERE id=:id", id=row["id"])) == 1
    finally:
        up.stop(timeout=1)


def test_slow_database_answers_in_time_and_links_the_call_when_the_lookup_lands(db, crm_url, tmp_path):
    app = make_app(crm_url, tmp_path, timeout="0.5")
    wait_for(lambda: app.directory._users is not None)      # warmed up: only the lock is slow
    locker = create_engine(crm_url).connect()
    locker.execute(text("LOCK TABLES contacts WRITE"))
    try:
        fake = FakeAsterisk(load_scenario("01-inbound-answered"))
        incoming = fake.run_session(0, app.agi.address)
        assert incoming.variables["CRM_STATUS"] == "error"
        assert incoming.elapsed < app.config.agi.timeout
    finally:
        gevent.sleep(0.3)
        locker.execute(text("UNLOCK TABLES"))
        locker.close()
    try:
        row = call(db, incoming.variables["CRM_CALL_ID"])
    finally:
        app.stop(timeout=1)
    assert (row["parent_type"], row["parent_id"]) == ("Contacts", CONTACT)   # the late lookup was used


def test_crmagi_down_at_call_start_the_hangup_still_logs_the_call(app, db):
    """10b: AGI() to a dead server fails at once and the dialplan goes on; the include's
    CRM_DIRECTION/CRM_DID let the hangup request write the whole call."""
    fake = FakeAsterisk(load_scenario("01-inbound-answered"))
    channel = fake.channel(1)
    channel.write("CRM_DIRECTION", "Inbound")
    channel.write("CRM_DID", "4930123400")
    result = fake.run_session(1, app.agi.address)            # only the hangup handler reaches crmagi
    assert result.server_closed
    call_id = app.flow.call_id_for("", "1795699120.0")
    row = call(db, call_id, status="Held")
    assert (row["direction"], row["parent_type"], row["parent_id"]) == ("Inbound", "Contacts", CONTACT)
    assert rows(db, HISTORY_CONTACT, rid=CONTACT) == [{"id": call_id}]
    extra = crmagi_row(db, call_id)
    assert extra["did"] == "4930123400" and extra["talk_seconds"] == 5


def test_hangup_of_a_channel_crmagi_never_saw_writes_nothing(app, db, caplog):
    fake = FakeAsterisk(load_scenario("01-inbound-answered"))
    result = fake.run_session(1, app.agi.address)
    assert result.server_closed
    gevent.sleep(0.2)
    assert rows(db, "SELECT COUNT(*) AS n FROM calls")[0]["n"] == 0
    assert "not a crmagi call" in caplog.text


def test_the_network_caller_name_travels_to_the_popup_as_data(app, db):
    """CNAM is attacker-controlled: it reaches the popup (which escapes it) untouched, never SQL."""
    seen = []
    app.flow.notify = lambda kind, record, result: seen.append((kind, record.caller_name))
    replay(app, "03d-inbound-hostile-callerid")
    replay(app, "01-inbound-answered")
    assert ("ringing", "Robert'); DROP TABLE calls;-- \"Bobby\"") in seen
    assert ("ringing", None) in seen          # Asterisk's "unknown" is no name


def test_a_crm_outage_is_logged_once_not_once_per_call(db, crm_url, tmp_path, caplog, capfd):
    down = make_app("mysql+pymysql://root@127.0.0.1:1/suitecrm", tmp_path, timeout="0.3")
    try:
        for _ in range(3):
            assert replay(down, "01-inbound-answered")[0].variables["CRM_STATUS"] == "error"
    finally:
        down.stop(timeout=1)
    failures = [r for r in caplog.records if r.getMessage().startswith("CRM lookup failed")]
    assert len(failures) == 1
    assert "Traceback" not in capfd.readouterr().err      # no greenlet traceback per call
