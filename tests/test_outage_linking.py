"""Tier c: calls taken while the CRM refuses crmagi keep their client (issue #9, section 1).

The CRM database refuses crmagi's login (password changed, its connections
killed) while calls arrive from known numbers of every configured module.  The
dialplan gets CRM_STATUS=error in time; when the database is back each call is
written once, on the record its number belongs to, in that record's History,
assigned to the record's owner -- not on the virtual account.  The same after
``kill -9`` of a `crmagi serve` holding those calls in its spool.
"""
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid

import gevent
import pytest
from sqlalchemy import create_engine, text

from agi.app import App
from agi.demo.simulator import SimulatedCall
from crmsync.models import LiveUpdate
from conftest import MARIADB_HOST, MARIADB_PORT, REPO
from test_workers import free_port
from test_end_to_end import (ACCOUNT, CONTACT, HISTORY_ACCOUNT, HISTORY_CONTACT, LEAD, SEED, VIRTUAL,
                             app_config, rows, seeded, wait_for)

HISTORY_LEAD = """SELECT c.id FROM calls c JOIN calls_leads cl ON cl.call_id=c.id AND cl.deleted=0
    WHERE cl.lead_id=:rid AND c.deleted=0 AND c.status IN ('Held','Not Held')"""
ANSWERED = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "7", "DIALEDTIME": "9", "DIALEDPEERNUMBER": "101"}
MISSED = {"DIALSTATUS": "NOANSWER", "DIALEDTIME": "20"}

# (direction, number, callerid, expected parent, History query, owner): one per module, and a withheld one.
CALLS = [
    ("incoming", "4930123400", "+4930111111", ("Contacts", CONTACT), HISTORY_CONTACT, "seed_sally_id"),
    ("incoming", "4930123400", "+49 30 555555", ("Accounts", ACCOUNT), HISTORY_ACCOUNT, "seed_sally_id"),
    ("incoming", "4930123400", "004930987654", ("Leads", LEAD), HISTORY_LEAD, "seed_chris_id"),
    ("outgoing", "004930987654", "101", ("Leads", LEAD), HISTORY_LEAD, "seed_sally_id"),
    ("incoming", "4930123400", "anonymous", ("Accounts", VIRTUAL), HISTORY_ACCOUNT, None),
]


class CrmLogin:
    """A MariaDB account for crmagi whose password can be changed under it."""

    def __init__(self, admin, database):
        self.admin, self.user, self.password = admin, "crmagi_%s" % uuid.uuid4().hex[:8], "right-pass"
        self._sql("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'" % (self.user, self.password))
        self._sql("GRANT ALL ON `%s`.* TO '%s'@'%%'" % (database, self.user))
        self.url = "mysql+pymysql://%s:%s@%s:%d/%s" % (self.user, self.password, MARIADB_HOST, MARIADB_PORT,
                                                      database)

    def _sql(self, statement):
        with self.admin.begin() as conn:
            conn.execute(text(statement))

    def refuse(self):
        """Password changed, every open connection of the account killed."""
        self._sql("ALTER USER '%s'@'%%' IDENTIFIED BY 'changed-pass'" % self.user)
        with self.admin.connect() as conn:
            ids = conn.execute(text("SELECT id FROM information_schema.processlist WHERE user=:u"),
                               {"u": self.user}).scalars().all()
        for pid in ids:
            try:
                self._sql("KILL %d" % pid)
            except Exception:       # already gone
                pass

    def accept(self):
        self._sql("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'" % (self.user, self.password))

    def drop(self):
        self._sql("DROP USER IF EXISTS '%s'@'%%'" % self.user)


@pytest.fixture
def db(crm_url):
    engine = seeded(crm_url, SEED + [
        "INSERT INTO accounts (id, name, deleted, date_modified) VALUES ('%s', 'Unidentified callers', 0,"
        " '2026-11-01 10:00:00')" % VIRTUAL])
    yield engine
    engine.dispose()


@pytest.fixture
def login(db, crm_url):
    account = CrmLogin(db, crm_url.rsplit("/", 1)[1])
    yield account
    account.drop()


def place(address, direction, number, callerid, dial):
    call = SimulatedCall(address, direction, number=number, callerid=callerid,
                         uniqueid="%d.%d" % (1795700000, uuid.uuid4().int % 10 ** 6))
    return call, call.start()


def assert_linked(db, call_id, parent, history, owner, status):
    row = rows(db, "SELECT * FROM calls WHERE id=:id", id=call_id)[0]
    assert (row["parent_type"], row["parent_id"]) == parent
    assert row["status"] == status
    assert {"id": call_id} in rows(db, history, rid=parent[1])
    assert row["assigned_user_id"] == owner
    if parent[1] != VIRTUAL:
        assert "(" in row["name"], row["name"]          # the record's name is in the subject
    assert len(rows(db, "SELECT call_id FROM crmagi_calls WHERE call_id=:id", id=call_id)) == 1


def linked_users(db, call_id):
    return {r["user_id"] for r in rows(db, "SELECT user_id FROM calls_users WHERE call_id=:id AND deleted=0",
                                       id=call_id)}


def test_calls_during_a_refused_login_land_on_their_records(db, login, tmp_path):
    app = App(app_config(login.url, tmp_path, agi={"timeout": "0.5"})).start()
    try:
        wait_for(lambda: app.directory._users is not None)
        login.refuse()
        placed = []
        for direction, number, callerid, parent, history, owner in CALLS:
            call, first = place(app.agi.address, direction, number, callerid, ANSWERED)
            assert first.server_closed and first.elapsed < app.config.agi.timeout
            if callerid != "anonymous":
                assert first.variables["CRM_STATUS"] == "error"
            placed.append((call, first.variables["CRM_CALL_ID"], parent, history, owner))
        # An AMI transfer to 103 (will) learned while the CRM was still down applies on top.
        app.writer.submit_live(LiveUpdate(placed[0][1], "transferred", extension="103"))
        for call, *_ in placed:
            call.finish(ANSWERED)
        wait_for(lambda: app.writer.pending() >= len(CALLS), timeout=10)
        login.accept()
        wait_for(lambda: app.writer.pending() == 0, timeout=15)
    finally:
        app.stop(timeout=1)
    # 101 (sally) answered every call, so she holds them; the transferred one is will's.
    owners = {placed[0][1]: "seed_will_id", placed[2][1]: "seed_sally_id", placed[4][1]: "seed_sally_id"}
    for call, call_id, parent, history, owner in placed:
        assert_linked(db, call_id, parent, history, owners.get(call_id, owner), "Held")
    assert linked_users(db, placed[0][1]) == {"seed_sally_id", "seed_will_id"}
    assert linked_users(db, placed[2][1]) == {"seed_chris_id", "seed_sally_id"}     # owner, answerer


def _ini(path, url, spool, port):
    path.write_text("[crm]\nurl = %s\nquery_timeout = 1\n[agi]\nlisten = 127.0.0.1:%d\ntimeout = 0.5\n"
                    "spool = %s\nflush_interval = 0.2\n[lookup]\ndefault_region = DE\n[metrics]\nlisten = 127.0.0.1:0\n"
                    % (url, port, spool))
    return path


def _listening(address):
    try:
        socket.create_connection(address, timeout=0.5).close()
        return True
    except OSError:
        return False


def _serve(ini, address):
    with open(ini.with_suffix(".log"), "ab") as log:      # shown when the test fails
        proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)], cwd=str(REPO),
                                stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: _listening(address), timeout=20)
    return proc


def _log_tail(ini):
    return ini.with_suffix(".log").read_text(errors="replace")[-3000:]


def _spooled(spool):
    with sqlite3.connect(str(spool)) as conn:
        return conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0]


def test_calls_spooled_by_a_killed_crmagi_land_on_their_records(db, login, tmp_path):
    spool = tmp_path / "spool.sqlite"
    address = ("127.0.0.1", free_port())
    ini = _ini(tmp_path / "crmagi.ini", login.url, spool, address[1])
    proc = _serve(ini, address)
    try:
        # Answering AGI (a hangup of no crmagi call writes nothing), then warmed up (users
        # loaded): what the outage hits is the calls.
        probe = SimulatedCall(address, number="1", callerid="1", variables={"CRM_DIRECTION": ""})
        wait_for(lambda: probe.finish().agistatus == "SUCCESS", timeout=20)
        gevent.sleep(1)
        login.refuse()
        placed = []
        for direction, number, callerid, parent, history, owner in CALLS:
            call, first = place(address, direction, number, callerid, MISSED)
            call.finish(MISSED)
            assert "CRM_CALL_ID" in first.variables, (first.agistatus, _log_tail(ini))
            placed.append((first.variables["CRM_CALL_ID"], parent, history, owner))
        wait_for(lambda: _spooled(spool) >= 2 * len(CALLS), timeout=15)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    login.accept()
    proc = _serve(ini, address)
    try:
        wait_for(lambda: _spooled(spool) == 0, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    for call_id, parent, history, owner in placed:
        assert_linked(db, call_id, parent, history, owner, "Not Held")
