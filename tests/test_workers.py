"""Tier c: `crmagi serve` with [agi] workers = 2: two processes on one port, both answering,
and one /metrics and /healthz for both, served by the parent."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry
from sqlalchemy import bindparam, text
from prometheus_client.multiprocess import MultiProcessCollector

from agi.demo.simulator import SimulatedCall
from conftest import ASTERISK, REPO
from crmsync.db import make_engine
from agi.ops.workers import worker_spool
from scrape import health, metrics, value
from test_end_to_end import wait_for


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listeners(port):
    """How many sockets listen on 127.0.0.1:``port``: one per worker that has bound it (SO_REUSEPORT)."""
    local = "0100007F:%04X" % port
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table if line.split()[1:2] == [local] and line.split()[3] == "0A")


def both_listen(port):
    """The kernel spreads connections only over the sockets bound so far: a worker still starting
    (seconds on a loaded box) would see none of the calls placed as soon as the first listens."""
    wait_for(lambda: listeners(port) == 2, timeout=60)


def test_worker_spool_names():
    assert worker_spool("/var/lib/crmagi/spool.sqlite", 1) == "/var/lib/crmagi/spool.w1.sqlite"


def test_two_workers_share_the_port_and_stop_on_sigterm(crm_url, tmp_path):
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                   "[metrics]\nlisten = 127.0.0.1:%d\n" % (crm_url, port, free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)],
                            stderr=subprocess.PIPE, text=True)
    try:
        both_listen(port)
        deadline = time.monotonic() + 20
        statuses = []
        while time.monotonic() < deadline and len(statuses) < 20:
            try:
                first, _ = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400",
                                         callerid="").run(dial={"DIALSTATUS": "NOANSWER"})
            except OSError:
                time.sleep(0.2)
                continue
            if first.agistatus == "SUCCESS":
                statuses.append(first.variables.get("CRM_STATUS"))
        assert statuses == ["anonymous"] * 20
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2
        # Each worker has its own spool file (opened before it listens).
        names = [p.name for p in tmp_path.iterdir() if p.name.startswith("crmagi-spool")]
        assert any(".w0." in n for n in names) and any(".w1." in n for n in names), names
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0


def place_calls(port, count):
    """``count`` inbound calls (incoming + hangup) through the workers; retried until they listen."""
    placed, deadline = 0, time.monotonic() + 30
    while placed < count and time.monotonic() < deadline:
        first, last = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400",
                                    callerid="+4930999999").run(dial={"DIALSTATUS": "NOANSWER"})
        if first.agistatus == "SUCCESS":
            assert last.agistatus == "SUCCESS"
            placed += 1
        else:
            time.sleep(0.2)
    return placed


def calls_of_one_worker(metrics_dir, pid, tmp_path):
    """What one worker counted: its own mmap'd file read alone."""
    alone = tmp_path / ("alone-%d" % pid)
    alone.mkdir()
    shutil.copy(metrics_dir / ("counter_%d.db" % pid), alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))
    return sum(s.value for f in registry.collect() for s in f.samples
               if s.name == "crmagi_calls_total" and s.labels["route"] == "hangup")


def test_two_workers_give_one_metrics_view(crm_url, tmp_path):
    port, mport = free_port(), free_port()
    address = ("127.0.0.1", mport)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")   # emptied at start
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                   "timeout = 3\n[lookup]\ndefault_region = DE\n"
                   "[metrics]\nlisten = 127.0.0.1:%d\nprobe_interval = 0.2\n" % (crm_url, port, mport))
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)], stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)))
    try:
        both_listen(port)
        assert place_calls(port, 40) == 40
        wait_for(lambda: value(metrics(address), "crmagi_calls_total", route="hangup", crm_status="none") == 40,
                 timeout=10)
        text = metrics(address)
        assert value(text, "crmagi_calls_total", route="incoming", crm_status="unknown") == 40
        assert value(text, "crmagi_agi_answer_seconds_count", route="incoming") == 40
        assert value(text, "crmagi_lookup_seconds_count") == 40
        workers = sorted(int(pid) for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                            text=True).stdout.split())
        assert len(workers) == 2
        assert sorted(int(p.name[8:-3]) for p in metrics_dir.glob("counter_*.db")) == workers
        per_worker = [calls_of_one_worker(metrics_dir, pid, tmp_path) for pid in workers]
        assert sum(per_worker) == 40 and min(per_worker) > 0      # both took calls; the view sums them
        status, body = wait_for(lambda: (lambda h: h if h[1]["crm"] == "up" else None)(health(address)))
        assert status == 200 and body["workers"] == "2/2" and body["reasons"] == []
        # livesum of both spools (a write in flight is in its spool for a moment)
        wait_for(lambda: value(metrics(address), "crmagi_spool_pending") == 0, timeout=10)

        os.kill(workers[0], signal.SIGKILL)                          # a worker dies: restarted
        wait_for(lambda: not (metrics_dir / ("gauge_livesum_%d.db" % workers[0])).exists(), timeout=10)
        assert value(metrics(address), "crmagi_calls_total", route="hangup", crm_status="none") == 40
        assert place_calls(port, 10) == 10
        wait_for(lambda: value(metrics(address), "crmagi_calls_total", route="hangup", crm_status="none") == 50,
                 timeout=10)
        wait_for(lambda: health(address)[1]["workers"] == "2/2", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0


def test_one_worker_follows_ami_and_updates_that_beat_their_row_wait_for_it(crm_url, tmp_path):
    """Each worker parsing the whole AMI stream and writing every update twice cost a third
    of a call's CPU: only worker 0 logs in.  Its updates of calls the other worker took, and
    updates that reach it before their call's row exists (here every call's AMI events are
    sent before its ``incoming`` AGI), are kept until the row is there, not dropped."""
    sys.path.insert(0, str(REPO / "bench"))
    from faults_ami import AmiFeed, Scenario

    feed = AmiFeed()
    scenario = Scenario(str(ASTERISK / "01-inbound-answered.ami.txt"))
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                   "flush_interval = 0.5\n[metrics]\nlisten = 127.0.0.1:%d\n[ami]\nhost = 127.0.0.1\nport = %d\n"
                   "username = crm\nsecret = crmsecret\n" % (crm_url, port, free_port(), feed.port))
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)], stderr=subprocess.PIPE,
                            text=True)
    engine = make_engine(crm_url)
    try:
        both_listen(port)                           # calls of both workers, updates of the other's calls
        assert place_calls(port, 1) == 1
        wait_for(lambda: len(feed.clients) == 1, timeout=10)
        epoch, linkedids = int(time.time()), []
        for serial in range(1, 21):
            linkedid = "%d.%d" % (epoch, serial)
            assert feed.send_call(scenario, linkedid, serial, epoch)
            call = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400", callerid="+4930999999",
                                 uniqueid=linkedid)
            first, last = call.run(dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "5", "DIALEDPEERNUMBER": "101"})
            assert (first.agistatus, last.agistatus) == ("SUCCESS", "SUCCESS")
            linkedids.append(linkedid)

        def answered():
            with engine.connect() as conn:
                return conn.execute(text("SELECT COUNT(*) FROM crmagi_calls WHERE answered_extension = '101' "
                                         "AND linkedid IN :ids").bindparams(bindparam("ids", expanding=True)),
                                    {"ids": linkedids}).scalar()
        try:
            wait_for(lambda: answered() == 20, timeout=30)
        except AssertionError:
            proc.send_signal(signal.SIGTERM)
            raise AssertionError("%d answered; %s" % (answered(), proc.communicate(timeout=15)[1][-3000:]))
        time.sleep(1)
        assert feed.connections == 1 and len(feed.clients) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        engine.dispose()
        feed.close()


def test_workers_exit_when_their_parent_is_killed(crm_url, tmp_path):
    """SIGKILL of the parent cannot be passed on: the workers notice and drain by themselves
    instead of keeping the port, the AMI login and database connections as orphans."""
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                   "[metrics]\nlisten = 127.0.0.1:%d\n" % (crm_url, port, free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)], stderr=subprocess.DEVNULL)
    try:
        assert place_calls(port, 1) == 1
        children = wait_for(lambda: subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split(), timeout=10)
        assert len(children) == 2
    finally:
        proc.kill()
        proc.wait(timeout=5)

    def alive(pid):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        try:
            with open("/proc/%s/stat" % pid) as stat:        # a zombie is gone too
                return stat.read().split(") ")[1][0] != "Z"
        except FileNotFoundError:
            return False

    wait_for(lambda: not any(alive(pid) for pid in children), timeout=40)   # a drain on a loaded box


def test_a_worker_whose_parent_died_before_it_watched_exits(monkeypatch):
    """CI: the parent was SIGKILLed while a worker was still starting its App; the worker then
    took its new parent (init) for its parent and was never told.  The parent's pid comes from
    the parent (PARENT_ENV), so a parent gone before the watch starts is seen at the first look."""
    import gevent

    from agi.ops import workers

    signals = []
    monkeypatch.setattr(workers.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    monkeypatch.setenv(workers.PARENT_ENV, str(os.getppid() + 1_000_000))    # not our parent
    watcher = workers.exit_with_parent(interval=0.01)
    watcher.join(timeout=2)
    assert signals == [(os.getpid(), signal.SIGTERM)]
