"""Tier c: junk and truncated FastAGI, websocket and AMI traffic from many sockets while recorded
calls go through the App against MariaDB: the calls must come out exactly as without the junk
(the same Call rows, links and owners) and every real AGI request answered within [agi] timeout.

bench/junk_traffic.py runs the same for longer and prints the counts.
"""
import random

import gevent

from agi.app import App
from asterisk_replay import FakeAsterisk, load_scenario
from conftest import create_suitecrm_database, drop_database, mariadb_url
from fake_ami import FakeAmi, recorded_events
from junk_peers import Counter, agi_junk, ami_junk_frames, interleave, swarm, ws_junk
from test_end_to_end import app_config, rows, seeded, wait_for
from test_live_end_to_end import SEED_LIVE

SCENARIOS = ("01-inbound-answered", "05a-queue-ringall", "06a-blind-transfer", "04a-outbound-answered")
SECRET = "junk-popup-secret-0123456789abcdef"
ORIGIN = "http://crm.junk.test"
TIMEOUT = 3.0          # [agi] timeout: a loaded CI box, and 200 junk sockets in this very process
CALL_COLUMNS = ("name", "status", "direction", "parent_type", "parent_id", "assigned_user_id", "duration_hours",
                "duration_minutes", "deleted")


class Run:
    """One App on a fresh SuiteCRM database, the recorded calls, optionally a junk swarm."""

    def __init__(self, tmp_path, sockets=0, ami_junk=0, scenarios=SCENARIOS, seed=3):
        self.tmp_path, self.sockets, self.ami_junk, self.scenarios = tmp_path, sockets, ami_junk, scenarios
        self.rng, self.counts, self.sessions = random.Random(seed), Counter(), {}
        tmp_path.mkdir(exist_ok=True)
        self.connections = 0

    def play(self):
        database = create_suitecrm_database()
        engine = seeded(mariadb_url(database), SEED_LIVE)
        ami = FakeAmi().start()
        ami.pace, ami.stream_after = 0.002, "CoreShowChannels"
        app = App(app_config(mariadb_url(database), self.tmp_path, ami.port, agi={"timeout": str(TIMEOUT)},
                             webpush={"listen": "127.0.0.1:0", "secret": SECRET, "allowed_origins": ORIGIN})).start()
        done, swarms = [], []
        if self.sockets:
            agi = lambda rng, n, counts: agi_junk(app.agi.address, rng, n, counts)  # noqa: E731
            ws = lambda rng, n, counts: ws_junk(app.popups.server.address, rng, n, counts, ORIGIN, SECRET)  # noqa
            swarms = [gevent.spawn(swarm, agi, self.sockets // 2, lambda: done, self.counts, 1),
                      gevent.spawn(swarm, ws, self.sockets // 2, lambda: done, self.counts, 2)]
            gevent.sleep(0.5)
        try:
            for index, name in enumerate(self.scenarios):
                self.sessions[name] = self._call(app, ami, name, index)
            wait_for(lambda: app.writer.pending() == 0, timeout=30)
            done.append(True)
            self.connections = sum(greenlet.get(timeout=20) for greenlet in swarms)
            self.calls = {name: self._rows(engine, results[0].variables["CRM_CALL_ID"])
                          for name, results in self.sessions.items()}
            self.stats = dict(agi=dict(app.agi.stats), ami=dict(app.ami.stats), ws=dict(app.popups.server.stats))
        finally:
            done.append(True)
            gevent.joinall(swarms, timeout=10)
            app.stop(timeout=1)
            ami.stop()
            engine.dispose()
            drop_database(database)
        return self

    def _call(self, app, ami, name, index):
        fake = FakeAsterisk(load_scenario(name))
        results = [fake.run_session(0, app.agi.address)]
        events = recorded_events(name)
        if self.ami_junk:
            events = interleave(events, ami_junk_frames(self.rng, index, self.ami_junk), self.rng)
        assert app.ami.connected.wait(5)
        ami.events = events
        app.ami._sock.close()             # the stream starts on a fresh login
        wait_for(lambda: not ami.events, timeout=30)
        wait_for(lambda: app.live.pending() == 0, timeout=30)
        gevent.sleep(0.3)
        results += [fake.run_session(i, app.agi.address) for i in range(1, len(fake.scenario.sessions))]
        return results

    @staticmethod
    def _rows(engine, call_id):
        call = rows(engine, "SELECT %s FROM calls WHERE id=:c" % ", ".join(CALL_COLUMNS), c=call_id)
        extra = rows(engine, "SELECT answered_extension, transfer_extension, transfers FROM crmagi_calls"
                             " WHERE call_id=:c", c=call_id)
        users = rows(engine, "SELECT user_id FROM calls_users WHERE call_id=:c AND deleted=0 ORDER BY user_id",
                     c=call_id)
        contacts = rows(engine, "SELECT contact_id FROM calls_contacts WHERE call_id=:c AND deleted=0", c=call_id)
        return call, extra, users, contacts

    def variables(self):
        """What the incoming requests told the dialplan (CRM_CALL carries the start time: left out)."""
        return {name: {k: v for k, v in results[0].variables.items() if k != "CRM_CALL"}
                for name, results in self.sessions.items()}


def check_answered_in_time(run):
    for name, results in run.sessions.items():
        for result in results:
            assert result.server_closed and not result.timed_out and not result.pipelined, name
            assert result.elapsed < TIMEOUT + 0.5, (name, result.elapsed)


def test_recorded_calls_are_unaffected_by_200_junk_sockets_and_ami_junk(tmp_path):
    clean = Run(tmp_path / "clean").play()
    junk = Run(tmp_path / "junk", sockets=200, ami_junk=40).play()
    check_answered_in_time(clean)
    check_answered_in_time(junk)
    for name in SCENARIOS:
        call, extra, users, _ = clean.calls[name]
        assert call and extra and users, name               # the baseline wrote what the live tests check
        assert junk.calls[name] == clean.calls[name], name
    assert junk.variables() == clean.variables()
    assert junk.connections >= 200 and sum(junk.counts.values()) >= 200, junk.counts
    assert junk.stats["ami"]["junk"] > 0 and junk.stats["ami"]["connects"] == clean.stats["ami"]["connects"]
    assert junk.stats["agi"]["errors"] > 0 and junk.stats["ws"]["refused"] > 0
