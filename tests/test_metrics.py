"""Tiers a/b: the metrics module, the health verdict and the monitoring server, without a CRM."""
import threading
from types import SimpleNamespace

import gevent
import pytest
from prometheus_client import generate_latest, values
from prometheus_client.multiprocess import mark_process_dead

from agi.ops.health import Health, merged_report, verdict
from agi.ops.metrics import Metrics, ami_reading, popups_reading, spool_reading
from agi.ops.monitor import LocalView, MergedView, MonitorServer
from scrape import get, health, metrics, value


def text_of(m):
    return generate_latest(m.registry).decode()


def stats(pending=0, dead=0, oldest_age=None, size_bytes=0, full=False):
    return SimpleNamespace(pending=pending, dead=dead, oldest_age=oldest_age, size_bytes=size_bytes, full=full)


def test_hooks_count_events_with_their_labels():
    m = Metrics()
    m.agi_answered("incoming", "found", 0.012)
    m.agi_answered("incoming", "found", 0.3)
    m.agi_answered("incoming", "error", 0.49)
    m.agi_answered("hangup", None, 0.004)
    m.call_write("direct", True)
    m.call_write("direct", False)
    m.call_write("spool", True)
    m.db_error("OperationalError")
    text = text_of(m)
    assert value(text, "crmagi_calls_total", route="incoming", crm_status="found") == 2
    assert value(text, "crmagi_calls_total", route="incoming", crm_status="error") == 1
    assert value(text, "crmagi_calls_total", route="hangup", crm_status="none") == 1
    assert value(text, "crmagi_agi_answer_seconds_count", route="incoming") == 3
    assert value(text, "crmagi_agi_answer_seconds_bucket", route="incoming", le="0.025") == 1
    assert value(text, "crmagi_agi_answer_seconds_bucket", route="incoming", le="0.5") == 3
    assert value(text, "crmagi_agi_answer_seconds_sum", route="hangup") == pytest.approx(0.004)
    assert value(text, "crmagi_call_writes_total", via="direct", result="ok") == 1
    assert value(text, "crmagi_call_writes_total", via="direct", result="failed") == 1
    assert value(text, "crmagi_call_writes_total", via="spool", result="ok") == 1
    assert value(text, "crmagi_db_errors_total", error="OperationalError") == 1


def test_timed_directory_times_lookups_even_when_they_fail():
    ticks = iter([10.0, 10.25, 20.0, 20.5])
    m = Metrics(clock=lambda: next(ticks))

    class Directory:
        calls = 0

        def lookup(self, number):
            if number == "bad":
                raise RuntimeError("CRM down")
            return "caller of " + number

        def user(self, user_id):
            return "user " + user_id

    timed = m.timed(Directory())
    assert timed.lookup("123") == "caller of 123"
    with pytest.raises(RuntimeError):
        timed.lookup("bad")
    assert timed.user("1") == "user 1"           # everything else passes through, untimed
    text = text_of(m)
    assert value(text, "crmagi_lookup_seconds_count") == 2
    assert value(text, "crmagi_lookup_seconds_sum") == pytest.approx(0.75)
    assert value(text, "crmagi_lookup_seconds_bucket", le="0.25") == 1


def test_readings_are_read_when_scraped_not_before():
    reads = []
    spool = SimpleNamespace(stats=lambda: reads.append(1) or stats(pending=len(reads), oldest_age=4.5,
                                                                    size_bytes=8192))
    m = Metrics()
    m.read(spool_reading(spool))
    assert reads == []
    first = text_of(m)
    second = text_of(m)
    assert len(reads) == 2
    assert value(first, "crmagi_spool_pending") == 1 and value(second, "crmagi_spool_pending") == 2
    assert value(first, "crmagi_spool_oldest_age_seconds") == 4.5
    assert value(first, "crmagi_spool_size_bytes") == 8192 and value(first, "crmagi_spool_full") == 0


def test_ami_and_popup_readings():
    client = SimpleNamespace(connected=threading.Event(), stats={"connects": 0})
    hub = SimpleNamespace(count=lambda: 3, users=lambda: 2)
    book = SimpleNamespace(stats={"delivered": 7})
    m = Metrics()
    m.read(ami_reading(client))
    m.read(popups_reading(hub, book))
    text = text_of(m)
    assert value(text, "crmagi_ami_connected") == 0 and value(text, "crmagi_ami_reconnects_total") == 0
    client.connected.set()
    client.stats["connects"] = 3                 # logged in three times: two reconnects
    text = text_of(m)
    assert value(text, "crmagi_ami_connected") == 1 and value(text, "crmagi_ami_reconnects_total") == 2
    assert value(text, "crmagi_websocket_sockets") == 3 and value(text, "crmagi_websocket_users") == 2
    assert value(text, "crmagi_popups_sent_total") == 7


def test_ami_effects_readings():
    """How far the AMI effects are behind, and what that cost: updates spooled, events dropped."""
    from agi.ami.live import LivePipeline
    from agi.ops.metrics import live_reading

    live = LivePipeline(None, None, None, lambda system, linkedid: linkedid)
    m = Metrics()
    m.read(live_reading(live))
    for n in range(3):
        live.enqueue(SimpleNamespace(linkedid=str(n)))
    live.stats.update(shelved=5, dropped=1)
    text = text_of(m)
    assert value(text, "crmagi_ami_effects_backlog") == 3
    assert value(text, "crmagi_ami_spooled_total") == 5
    assert value(text, "crmagi_ami_dropped_total") == 1


def test_a_failing_reading_costs_only_itself():
    m = Metrics()
    m.read(lambda: 1 / 0)
    m.read(spool_reading(SimpleNamespace(stats=lambda: stats(pending=5))))
    assert value(text_of(m), "crmagi_spool_pending") == 5


def test_verdict_names_every_reason():
    assert verdict(True, None, False) == (True, [])
    assert verdict(None, None, False) == (True, [])          # not probed yet: not known to be down
    assert verdict(False, False, True, "refused") == (False, ["crm unreachable: refused", "ami down",
                                                              "spool full"])
    assert verdict(True, True, False) == (True, [])


def test_health_probe_failure_hang_and_recovery():
    answers = ["ok"]

    def ping():
        if answers[0] == "refused":
            raise OSError("(2003, \"Can't connect to MySQL server\")\nmore lines")
        if answers[0] == "hang":
            gevent.sleep(10)

    spool = SimpleNamespace(stats=lambda: stats(full=False))
    ami = SimpleNamespace(connected=threading.Event())
    h = Health(ping, spool, ami, interval=0.05, timeout=0.1, failures_to_down=2)
    assert h.report()[1]["crm"] == "unknown"
    h.check()
    healthy, body = h.report()
    assert not healthy and body["reasons"] == ["ami down"] and body["crm"] == "up" and body["ami"] == "down"
    ami.connected.set()
    assert h.report() == (True, {"status": "ok", "reasons": [], "crm": "up", "ami": "up", "spool_full": False})
    answers[0] = "refused"
    h.check()
    assert h.report()[0]                 # one failed probe is not an outage yet
    h.check()
    healthy, body = h.report()
    assert not healthy and body["reasons"] == ["crm unreachable: (2003, \"Can't connect to MySQL server\")"]
    answers[0] = "hang"
    h.check()
    h.check()
    assert h.report()[1]["reasons"] == ["crm unreachable: no answer within 0.1s"]
    answers[0] = "ok"
    spool.stats = lambda: stats(full=True)
    h.check()
    assert h.report() == (False, {"status": "unhealthy", "reasons": ["spool full"], "crm": "up", "ami": "up",
                                  "spool_full": True})


def test_merged_report():
    assert merged_report({"crmagi_crm_up": 1.0, "crmagi_spool_full": 0.0}, 2, 2) == (
        True, {"status": "ok", "reasons": [], "crm": "up", "ami": "off", "spool_full": False, "workers": "2/2"})
    healthy, body = merged_report({"crmagi_crm_up": 0.0, "crmagi_ami_connected": 0.0}, 1, 2)
    assert not healthy and body["reasons"] == ["crm unreachable", "ami down"] and body["workers"] == "1/2"
    healthy, body = merged_report({}, 0, 2)
    assert not healthy and body["reasons"] == ["no worker running"] and body["crm"] == "unknown"


def test_monitor_server_serves_metrics_and_health():
    m = Metrics()
    m.agi_answered("incoming", "found", 0.01)
    spool = SimpleNamespace(stats=lambda: stats(pending=2))
    m.read(spool_reading(spool))
    h = Health(lambda: None, spool)
    server = MonitorServer(("127.0.0.1", 0), LocalView(m, h)).start()
    try:
        address = server.address
        text = metrics(address)
        assert value(text, "crmagi_calls_total", route="incoming", crm_status="found") == 1
        assert value(text, "crmagi_spool_pending") == 2
        assert health(address) == (200, {"status": "ok", "reasons": [], "crm": "unknown", "ami": "off",
                                         "spool_full": False})
        spool.stats = lambda: stats(full=True)
        h.check()
        status, body = health(address)
        assert status == 503 and body["reasons"] == ["spool full"]
        assert get(address, "/nothing")[0] == 404
    finally:
        server.stop()


def test_workers_merge_into_one_view(tmp_path, monkeypatch):
    """Multiprocess mode in one test process: two "workers" (two pids' mmap files), one view."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    workers = {}
    for pid, pending, connected in ((1001, 3, 1), (1002, 4, 0)):
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda pid=pid: pid))
        m = Metrics(multiprocess=True)
        m.agi_answered("incoming", "found", 0.02)
        m.read(spool_reading(SimpleNamespace(stats=lambda pending=pending: stats(pending=pending, oldest_age=pending))))
        client = SimpleNamespace(connected=threading.Event(), stats={"connects": 2})
        if connected:
            client.connected.set()
        m.read(ami_reading(client))
        sampler = m.sampler()
        sampler.sample()
        client.stats["connects"] = 3
        sampler.sample()                 # counters from readings grow by their increase, once
        workers[pid] = m
    assert generate_latest(workers[1001].registry) == b""       # a worker serves nothing itself
    view = MergedView(str(tmp_path), alive=lambda: 2, workers=2)
    text = view.metrics_text().decode()
    assert value(text, "crmagi_calls_total", route="incoming", crm_status="found") == 2
    assert value(text, "crmagi_agi_answer_seconds_count", route="incoming") == 2
    assert value(text, "crmagi_spool_pending") == 7                  # livesum
    assert value(text, "crmagi_spool_oldest_age_seconds") == 4       # livemax
    assert value(text, "crmagi_ami_connected") == 0                  # livemin: one link is down
    assert value(text, "crmagi_ami_reconnects_total") == 4
    healthy, body = view.health()
    assert not healthy and body["reasons"] == ["ami down"]
    mark_process_dead(1002, str(tmp_path))
    text = view.metrics_text().decode()
    assert value(text, "crmagi_spool_pending") == 3 and value(text, "crmagi_ami_connected") == 1
    assert value(text, "crmagi_calls_total", route="incoming", crm_status="found") == 2   # totals stay
    assert view.health()[0]


def test_real_spool_depth_dead_letters_and_bound(tmp_path):
    from crmsync.spool import Spool

    spool = Spool(str(tmp_path / "spool.sqlite"), max_bytes=10 ** 9)
    m = Metrics()
    m.read(spool_reading(spool))
    h = Health(lambda: None, spool)
    first = spool.push("start", {"call_id": "a"})
    spool.push("finish", {"call_id": "a"})
    spool.bury(first, "Unknown column 'calls.name'")
    text = text_of(m)
    assert value(text, "crmagi_spool_pending") == 1 and value(text, "crmagi_spool_dead") == 1
    assert value(text, "crmagi_spool_oldest_age_seconds") >= 0 and value(text, "crmagi_spool_full") == 0
    h.check()
    assert h.report()[0]
    spool.max_bytes = 1                       # past [agi] spool_max_mb
    assert value(text_of(m), "crmagi_spool_full") == 1
    h.check()
    assert h.report() == (False, {"status": "unhealthy", "reasons": ["spool full"], "crm": "up", "ami": "off",
                                  "spool_full": True})


def test_db_errors_count_driver_errors_but_not_expected_answers(tmp_path):
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError, OperationalError

    from crmsync.db import make_engine, watch_errors

    engine = make_engine("sqlite:///%s" % (tmp_path / "crm.sqlite"))
    seen = []
    watch_errors(engine, seen.append)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE calls (id TEXT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO calls VALUES ('a')"))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO calls VALUES ('a')"))   # a replayed write: not an error
    with pytest.raises(OperationalError):
        with engine.begin() as conn:
            conn.execute(text("SELECT nothing FROM calls"))
    assert seen == ["OperationalError"]
