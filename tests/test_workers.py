"""Tier c: `crmagi serve` with [agi] workers = 2: two processes on one port, both answering,
and one /metrics and /healthz for both, served by the parent."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
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


def workers_of(proc):
    """The pids of the two workers of ``proc``, once both are started."""
    def both():
        pids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        return sorted(int(pid) for pid in pids) if len(pids) == 2 else None
    return wait_for(both, timeout=20)


@contextlib.contextmanager
def frozen(*pids):
    """The workers ``pids`` stopped (SIGSTOP) for the block.  The workers share one accept queue,
    so the others take every call meanwhile; a dead one is skipped when thawing."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def served_calls(port, count, timeout=10.0):
    """How many of ``count`` inbound calls crmagi served; a call placed while no worker accepts
    waits in the queue (up to ``timeout``).  A connection reset also leaves AGISTATUS=SUCCESS
    (Asterisk goes on): a call counts only if crmagi set CRM_STATUS."""
    served = 0
    for _ in range(count):
        first, last = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400",
                                    callerid="+4930999999").run(dial={"DIALSTATUS": "NOANSWER"}, timeout=timeout)
        served += (first.agistatus, last.agistatus) == ("SUCCESS", "SUCCESS") and \
            first.variables.get("CRM_STATUS") is not None
    return served


def worker_pid(proc, index):
    """The pid of worker ``index`` of ``proc`` (its command line says which it is)."""
    for pid in workers_of(proc):
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            args = cmdline.read().split(b"\0")
        if args[args.index(b"--worker") + 1] == str(index).encode():
            return pid
    raise AssertionError("no worker %d" % index)


def both_serve(proc, port):
    """Both workers accept calls (one call each, the other frozen): a worker still starting
    (seconds on a loaded box) would otherwise leave every call to the first.  Calls are refused
    until the first worker is ready, then queue for the one not frozen."""
    pids = workers_of(proc)
    wait_for(lambda: listening(port), timeout=30)
    served = []
    for pid in pids:
        with frozen(*(set(pids) - {pid})):
            served.append(served_calls(port, 1, timeout=30))
    assert served == [1, 1]
    return pids


def _listeners(port):
    """`ss` lines of the sockets listening on ``port`` (none while it is only bound)."""
    lines = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True).stdout
    return [line for line in lines.splitlines() if line.strip()]


def listening(port):
    """Whether a worker opened the port's accept queue (before, calls are refused)."""
    return bool(_listeners(port))


def queued(port):
    """Connections waiting to be accepted on 127.0.0.1:``port`` (the Recv-Q of its listeners)."""
    return sum(int(line.split()[1]) for line in _listeners(port))


def serve_two(crm_url, tmp_path, stderr=subprocess.DEVNULL, agi="", env=None):
    """`crmagi serve` with 2 workers on a free port: (the parent's Popen, the port)."""
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n%s"
                   "[metrics]\nlisten = 127.0.0.1:%d\n" % (crm_url, port, agi, free_port()))
    return subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)], stderr=stderr, text=True,
                            env=env), port


def test_worker_spool_names():
    assert worker_spool("/var/lib/crmagi/spool.sqlite", 1) == "/var/lib/crmagi/spool.w1.sqlite"


def test_two_workers_share_the_port_and_stop_on_sigterm(crm_url, tmp_path):
    proc, port = serve_two(crm_url, tmp_path, stderr=subprocess.PIPE)
    try:
        both_serve(proc, port)
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
        workers = workers_of(proc)
        wait_for(lambda: listening(port), timeout=30)
        served = []
        for pid in workers:             # 20 calls on each worker: while one is frozen the other takes all
            with frozen(*(set(workers) - {pid})):
                served.append(served_calls(port, 20))
        assert served == [20, 20]
        wait_for(lambda: value(metrics(address), "crmagi_calls_total", route="hangup", crm_status="none") == 40,
                 timeout=10)
        text = metrics(address)
        assert value(text, "crmagi_calls_total", route="incoming", crm_status="unknown") == 40
        assert value(text, "crmagi_agi_answer_seconds_count", route="incoming") == 40
        assert value(text, "crmagi_lookup_seconds_count") == 40
        assert sorted(int(p.name[8:-3]) for p in metrics_dir.glob("counter_*.db")) == workers
        per_worker = [calls_of_one_worker(metrics_dir, pid, tmp_path) for pid in workers]
        assert per_worker == [20, 20]                               # the view sums them
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
        both_serve(proc, port)
        zero, one = worker_pid(proc, 0), worker_pid(proc, 1)
        wait_for(lambda: len(feed.clients) == 1, timeout=10)
        epoch, linkedids = int(time.time()), []
        for serial in range(1, 21):
            linkedid = "%d.%d" % (epoch, serial)
            assert feed.send_call(scenario, linkedid, serial, epoch)
            call = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400", callerid="+4930999999",
                                 uniqueid=linkedid)
            if serial % 2 == 0:
                time.sleep(0.3)         # worker 0 reads the events first: its update beats the row
            # Odd calls on worker 0, even ones on worker 1, which gets its updates from worker 0.
            with frozen(one if serial % 2 else zero):
                first, last = call.run(dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "5",
                                             "DIALEDPEERNUMBER": "101"})
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
    proc, port = serve_two(crm_url, tmp_path)
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
    from agi.ops import workers

    signals = []
    monkeypatch.setattr(workers.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    monkeypatch.setenv(workers.PARENT_ENV, str(os.getppid() + 1_000_000))    # not our parent
    watcher = workers.exit_with_parent(interval=0.01)
    watcher.join(timeout=2)
    assert signals == [(os.getpid(), signal.SIGTERM)]


def test_a_port_taken_stops_the_start_with_the_key_named(crm_url, tmp_path):
    """The parent binds the port for all workers: a port in use is one clear error at start, not
    workers failing to bind and being restarted for ever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        ini = tmp_path / "crmagi.ini"
        ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                       "[metrics]\nlisten = 127.0.0.1:%d\n" % (crm_url, port, free_port()))
        try:
            done = subprocess.run([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)], capture_output=True,
                                  text=True, timeout=30)
        except subprocess.TimeoutExpired as exc:
            subprocess.run(["pkill", "-f", str(ini)])
            raise AssertionError("still running after 30 s: %s" % (exc.stderr or b"")[-2000:]) from None
    assert done.returncode != 0
    assert "config [agi] listen: cannot listen on 127.0.0.1:%d (Address already in use)" % port in done.stderr


def test_calls_queued_when_a_worker_dies_are_served_by_the_others(crm_url, tmp_path):
    """The accept queue is the parent's: calls waiting in it when a worker dies are taken by the
    others.  With a socket per worker (SO_REUSEPORT) the calls the kernel had hashed to the dead
    worker's socket were reset with it.  Both workers are frozen while 6 calls queue, then worker 0
    is killed and worker 1 thawed."""
    import threading

    proc, port = serve_two(crm_url, tmp_path)
    try:
        results = []
        callers = [threading.Thread(target=lambda: results.append(served_calls(port, 1, timeout=30)))
                   for _ in range(6)]
        with frozen(*both_serve(proc, port)):
            for caller in callers:
                caller.start()
            wait_for(lambda: queued(port) == 6, timeout=10)
            os.kill(worker_pid(proc, 0), signal.SIGKILL)
            time.sleep(0.5)
        for caller in callers:
            caller.join(timeout=60)
        assert results == [1] * 6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_a_call_arriving_during_the_drain_is_refused_at_once(crm_url, tmp_path):
    """SIGTERM: the workers drain their sessions, and the port closes with them.  A call arriving
    meanwhile is refused at once (Asterisk goes on without us) rather than left in the accept queue
    the parent still held until the last worker had exited, and then reset."""
    proc, port = serve_two(crm_url, tmp_path, agi="reply_timeout = 8\n")
    held = None
    try:
        both_serve(proc, port)
        # A session in progress: its environment sent, the worker's first command never answered.
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.sendall(b"agi_network_script: incoming\nagi_uniqueid: 1.1\nagi_callerid: 4930999999\n\n")
        assert held.recv(100).startswith(b"GET FULL VARIABLE")
        proc.send_signal(signal.SIGTERM)

        wait_for(lambda: refused(port), timeout=5)
        assert proc.poll() is None              # refused while the held session still drains
    finally:
        if held is not None:
            held.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_with_every_worker_dead_calls_are_refused_until_one_runs_again(crm_url, tmp_path):
    """Asterisk waits for an AGI server's first command without a time limit: while no worker
    runs, the parent closes the port so that calls are refused (the dialplan goes on without the
    CRM) rather than held in silence; a restarted worker gets it bound again."""
    proc, port = serve_two(crm_url, tmp_path)
    try:
        for pid in both_serve(proc, port):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: refused(port), timeout=5)
        wait_for(lambda: served_calls(port, 1, timeout=10) == 1, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_a_worker_started_by_hand_is_refused(crm_url, tmp_path):
    """`--worker` is for the processes `crmagi serve` starts, which get its socket: alone, with
    [agi] workers > 1, it would bind the port for itself."""
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                   % (crm_url, free_port()))
    done = subprocess.run([sys.executable, "-m", "agi.cli", "serve", "--worker", "1", "-c", str(ini)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--worker is for the processes `crmagi serve` starts itself" in done.stderr


def test_a_port_freed_within_the_bind_wait_is_taken():
    """SIGKILL of the parent: its workers hold the port until they notice (about a second).  A
    crmagi started at once (a supervisor's restart) waits for the port instead of failing."""
    import threading

    from agi.errors import ConfigError
    from agi.ops.workers import _listen

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    address = holder.getsockname()
    with pytest.raises(ConfigError):
        _listen(address, wait=0)
    threading.Timer(1.0, holder.close).start()
    started = time.monotonic()
    _listen(address, wait=10).close()
    assert 0.8 < time.monotonic() - started < 5


def first_command_after(port, limit=30.0):
    """Seconds from connecting to 127.0.0.1:``port`` to the first AGI command of an incoming
    request (its environment sent at once, as Asterisk does), or None when refused."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
    except ConnectionRefusedError:
        return None
    with sock:
        connected = time.monotonic()
        sock.sendall(b"agi_network_script: incoming\nagi_uniqueid: 1.1\nagi_callerid: 4930999999\n\n")
        assert sock.recv(100)
        return time.monotonic() - connected


def test_a_call_placed_while_the_workers_start_is_refused_never_held(crm_url, tmp_path):
    """Asterisk waits for an AGI server's first command without a time limit.  While `crmagi
    serve` starts, its workers import and start for a second or more; a call placed then must be
    refused (the dialplan goes on at once, and the hangup request writes the call) or served within
    [agi] timeout, not held in the accept queue until a worker is ready.  The fault campaign saw
    such calls answered 566-604 ms after they connected, right after each restart of crmagi."""
    proc, port = serve_two(crm_url, tmp_path)
    try:
        waits, deadline = [], time.monotonic() + 60
        while not waits and time.monotonic() < deadline:
            wait = first_command_after(port)
            if wait is None:
                time.sleep(0.01)
            else:
                waits.append(wait)
        waits += [first_command_after(port) for _ in range(5)]
        assert len(waits) == 6 and max(waits) < 0.5 + 0.25, waits
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)



def test_systemd_hears_ready_once_a_worker_takes_calls(crm_url, tmp_path):
    """READY=1 (Type=notify) says crmagi takes calls: the parent sends it once a worker has
    opened the port's queue, not when it has bound the port."""
    import uuid

    name = "crmagi-test-%s" % uuid.uuid4().hex
    notices = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notices.bind("\0" + name)
    notices.settimeout(60)
    proc, port = serve_two(crm_url, tmp_path, env=dict(os.environ, NOTIFY_SOCKET="@" + name))
    try:
        assert notices.recv(4096).startswith(b"READY=1")
        assert listening(port)
    finally:
        notices.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
