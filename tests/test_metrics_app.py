"""Tier c: /metrics and /healthz of a running App, with MariaDB, the fake Asterisk and the fake AMI."""
import itertools
import socket

import gevent
from gevent.pool import Pool

from agi.app import App
from agi.demo.simulator import SimulatedCall
from asterisk_replay import FakeAsterisk, load_scenario
from conftest import drop_database
from fake_ami import FakeAmi, recorded_events
from scrape import get, health, metrics, samples, value
from test_popups_end_to_end import ORIGIN, SECRET, Tab
from test_end_to_end import app_config, call, db, replay, wait_for  # noqa: F401  (db: the seeded database)

PROBE = {"probe_interval": "0.2"}


def start(url, tmp_path, ami_port=None, **sections):
    sections.setdefault("agi", {"timeout": "3"})
    sections.setdefault("metrics", {}).update(PROBE)
    return App(app_config(url, tmp_path, ami_port, **sections)).start()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_becomes(app, status, timeout=10.0, **fields):
    """/healthz once it answers ``status`` (and the body has ``fields``)."""
    def check():
        got, body = health(app.monitor.address)
        wanted = got == status and all(body.get(key) == v for key, v in fields.items())
        return (got, body) if wanted else None
    return wait_for(check, timeout)


def metric_becomes(app, name, expected, timeout=10.0, **labels):
    return wait_for(lambda: value(metrics(app.monitor.address), name, **labels) == expected, timeout)


def test_recorded_calls_move_the_counters_and_histograms(db, crm_url, tmp_path):
    app = start(crm_url, tmp_path)
    try:
        address = app.monitor.address
        assert value(metrics(address), "crmagi_calls_total", route="incoming", crm_status="found") is None
        ids = [replay(app, name)[0].variables["CRM_CALL_ID"]
               for name in ("01-inbound-answered", "03b-inbound-anonymous", "04a-outbound-answered")]
        for call_id in ids:
            call(db, call_id, status="Held")
        metric_becomes(app, "crmagi_calls_total", 3, route="hangup", crm_status="none")
        text = metrics(address)
        assert value(text, "crmagi_calls_total", route="incoming", crm_status="found") == 1
        assert value(text, "crmagi_calls_total", route="incoming", crm_status="anonymous") == 1
        assert value(text, "crmagi_calls_total", route="outgoing", crm_status="found") == 1
        assert value(text, "crmagi_agi_answer_seconds_count", route="incoming") == 2
        assert value(text, "crmagi_agi_answer_seconds_count", route="hangup") == 3
        # Every answer came before [agi] timeout (3 s here): all in the buckets below it.
        assert value(text, "crmagi_agi_answer_seconds_bucket", route="incoming", le="2.5") == 2
        assert value(text, "crmagi_lookup_seconds_count") == 3
        # start + finish of each: directly, or from the spool when the finish came while its start
        # was still being written (it then queues behind it); none failed.
        writes = {labels: v for (name, labels), v in samples(text).items() if name == "crmagi_call_writes_total"}
        assert sum(writes.values()) == 6 and all(("result", "ok") in labels for labels in writes)
        # ... each in a transaction of its own: three calls one after another never queue
        assert value(text, "crmagi_write_transactions_total") == value(text, "crmagi_write_ops_total") == 6
        assert value(text, "crmagi_spool_pending") == 0 and value(text, "crmagi_spool_dead") == 0
        assert value(text, "crmagi_spool_size_bytes") > 0
        assert not [key for key in samples(text) if key[0] == "crmagi_db_errors_total"]
        metric_becomes(app, "crmagi_crm_up", 1)
        assert health(address) == (200, {"status": "ok", "reasons": [], "crm": "up", "ami": "off",
                                         "spool_full": False})
        assert get(address, "/")[0] == 404
    finally:
        app.stop(timeout=1)


def test_crm_port_closed_gives_503_and_calls_are_counted_as_spooled(tmp_path):
    app = start("mysql+pymysql://root@127.0.0.1:%d/suitecrm" % closed_port(), tmp_path,
                crm={"connect_timeout": "1", "query_timeout": "1"}, agi={"timeout": "0.5"})
    try:
        status, body = health_becomes(app, 503)
        assert body["crm"] == "down" and len(body["reasons"]) == 1
        assert body["reasons"][0].startswith("crm unreachable: ") and "Connection refused" in body["reasons"][0]
        first, _ = SimulatedCall(app.agi.address, "incoming", number="4930123400", callerid="+4930111111").run(
            dial={"DIALSTATUS": "NOANSWER"})
        assert first.variables["CRM_STATUS"] == "error"
        metric_becomes(app, "crmagi_calls_total", 1, route="hangup", crm_status="none")
        text = metrics(app.monitor.address)
        assert value(text, "crmagi_calls_total", route="incoming", crm_status="error") == 1
        # The start failed and was spooled; the finish queued behind it without a try (per-call order).
        assert value(text, "crmagi_call_writes_total", via="direct", result="failed") == 1
        assert value(text, "crmagi_spool_pending") == 2 and value(text, "crmagi_spool_oldest_age_seconds") > 0
        assert value(text, "crmagi_db_errors_total", error="OperationalError") >= 1
        assert value(text, "crmagi_crm_up") == 0
    finally:
        app.stop(timeout=1)


def test_dropped_crm_database_gives_503(db, crm_url, tmp_path):
    app = start(crm_url, tmp_path)
    try:
        health_becomes(app, 200, crm="up")
        drop_database(crm_url.rsplit("/", 1)[1])
        status, body = health_becomes(app, 503)
        assert body["reasons"][0].startswith("crm unreachable: ") and "Unknown database" in body["reasons"][0]
        assert metrics(app.monitor.address)      # still answers
    finally:
        app.stop(timeout=1)


def test_ami_configured_but_down_gives_503_and_reconnects_are_counted(db, crm_url, tmp_path):
    fake = FakeAmi(events=recorded_events("01-inbound-answered"))
    fake.refuse = True
    fake.start()
    app = start(crm_url, tmp_path, ami_port=fake.port)
    try:
        status, body = health_becomes(app, 503, crm="up")
        assert body["ami"] == "down" and body["reasons"] == ["ami down"]
        assert value(metrics(app.monitor.address), "crmagi_ami_connected") == 0
        fake.drop_after = 3          # log in, send 3 events, then drop as `core restart now` does
        fake.refuse = False
        metric_becomes(app, "crmagi_ami_reconnects_total", 1, timeout=20)
        health_becomes(app, 200, timeout=20, ami="up")
        assert value(metrics(app.monitor.address), "crmagi_ami_connected") == 1
    finally:
        app.stop(timeout=1)
        fake.stop()


NUMBERS = ("+4930111111", "030 555555", "+4930999999", "", "030 222222")


def test_metrics_and_health_keep_answering_under_200_concurrent_calls(db, crm_url, tmp_path):
    app = start(crm_url, tmp_path, agi={"timeout": "3"}, crm={"pool_size": "30"})
    address, calls, scrapes = app.monitor.address, 200, []
    try:
        health_becomes(app, 200)

        # Every call rings (between its two requests) until both endpoints have answered ten
        # scrapes: they are counted under load, not after it.  Counted over the calls' own
        # duration instead, a fast run left 8 (full suite, 2026-12-07; 24-36 alone).
        scraped = gevent.event.Event()

        def one(i):
            call = SimulatedCall(app.agi.address, "incoming", number="4930123400",
                                 callerid=NUMBERS[i % len(NUMBERS)])
            first = call.start(timeout=20)
            scraped.wait(timeout=60)
            last = call.finish({"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "3", "DIALEDTIME": "5"}, timeout=20)
            return first.agistatus, last.agistatus

        def scraper(stop):
            for n in itertools.count():
                if stop.ready():
                    return
                if n % 2:
                    samples(metrics(address))     # 200, and parses
                    scrapes.append("metrics")
                else:
                    # Healthy, or a CRM really too slow for this busy box: either way a reason.
                    status, body = health(address)
                    assert (status, body["status"], body["reasons"] == []) in (
                        (200, "ok", True), (503, "unhealthy", False)), (status, body)
                    scrapes.append("healthz")
                if scrapes.count("metrics") >= 10 and scrapes.count("healthz") >= 10:
                    scraped.set()

        placing = Pool(calls)
        jobs = [placing.spawn(one, i) for i in range(calls)]
        done = gevent.event.Event()
        scrapers = [gevent.spawn(scraper, done) for _ in range(4)]
        placing.join(timeout=120)
        done.set()
        gevent.joinall(scrapers, timeout=10, raise_error=True)
        assert [job.value for job in jobs] == [("SUCCESS", "SUCCESS")] * calls
        assert scrapes.count("metrics") >= 10 and scrapes.count("healthz") >= 10
        metric_becomes(app, "crmagi_calls_total", calls, timeout=30, route="hangup", crm_status="none")
        text = metrics(address)
        by_status = {labels: v for (name, labels), v in samples(text).items()
                     if name == "crmagi_calls_total" and ("route", "incoming") in labels}
        assert sum(by_status.values()) == calls
        assert value(text, "crmagi_agi_answer_seconds_count", route="incoming") == calls
        assert value(text, "crmagi_lookup_seconds_count") == calls
        metric_becomes(app, "crmagi_spool_pending", 0, timeout=30)

        def written():
            return sum(v for (name, labels), v in samples(metrics(address)).items()
                       if name == "crmagi_call_writes_total" and ("result", "ok") in labels)
        # Start + finish of each, directly or from the spool, each once.  Writes still in flight
        # are not pending in the spool: wait for them (on a busy box some outlive the timeout and
        # end seconds later), then check none is counted twice.
        wait_for(lambda: written() >= 2 * calls, 30)
        assert written() == 2 * calls
        assert health_becomes(app, 200, crm="up")[1]["reasons"] == []
    finally:
        app.stop(timeout=2)


def test_websocket_tabs_users_and_popups_sent(db, crm_url, tmp_path):
    app = start(crm_url, tmp_path, webpush={"listen": "127.0.0.1:0", "secret": SECRET, "allowed_origins": ORIGIN})
    try:
        sally, sally_again, bob = Tab(app, "seed_sally_id"), Tab(app, "seed_sally_id"), Tab(app, "seed_max_id")
        metric_becomes(app, "crmagi_websocket_sockets", 3)
        text = metrics(app.monitor.address)
        assert value(text, "crmagi_websocket_users") == 2 and value(text, "crmagi_popups_sent_total") == 0
        fake = FakeAsterisk(load_scenario("01-inbound-answered"))
        fake.run_session(0, app.agi.address)        # ringing: Anna's owner is sally, her active tab
        metric_becomes(app, "crmagi_popups_sent_total", 1)
        fake.run_session(1, app.agi.address)        # hangup
        assert [kind for kind, _ in sally_again.drain()].count("popup") == 1
        bob.ws.close()
        metric_becomes(app, "crmagi_websocket_sockets", 2)
        assert value(metrics(app.monitor.address), "crmagi_websocket_users") == 1
        sally.ws.close()
        sally_again.ws.close()
    finally:
        app.stop(timeout=1)
