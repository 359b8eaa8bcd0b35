"""`crmagi serve` with ``[agi] workers`` > 1: one process per core on one port.

Python runs one core per process, so each worker is a whole `crmagi serve`
(its own gevent hub, database pool and spool file).  This parent binds the FastAGI
port once and passes the socket to every worker: whichever is free accepts the next
call (agi/fastagi/server.py make_listener says why not SO_REUSEPORT).  It starts them,
restarts one that dies, passes SIGTERM/SIGINT on, and serves /metrics and
/healthz for all of them: the workers write their metrics to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode), which this
process merges when scraped (agi/ops/metrics.py).
"""
import errno
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from agi.errors import ConfigError
from agi.ops import systemd

log = logging.getLogger("crmagi.workers")
RESTART_DELAY = 1.0
BIND_WAIT = 5.0     # seconds a port in use is waited for at start (see _listen)
# The parent's pid, given to each worker: a worker reading os.getppid() itself would, if the
# parent died while the worker was still starting, take its new parent (init) for its own.
PARENT_ENV = "CRMAGI_PARENT_PID"


def worker_command(config_path, index, listen=None, listen_fd=None):
    cmd = [sys.executable, "-m", "agi.cli", "serve", "--worker", str(index)]
    if listen_fd is not None:
        cmd += ["--listen-fd", str(listen_fd)]
    if config_path:
        cmd += ["-c", config_path]
    if listen:
        cmd += ["--listen", listen]
    return cmd


def run_workers(config_path, count, listen=None, metrics_listen=None, address=None):
    """Run ``count`` workers until SIGTERM/SIGINT; returns the exit status.  ``address``: the
    FastAGI (host, port), bound here for all workers; a port taken raises ConfigError."""
    port = SharedPort(address)
    metrics_dir, own_dir = metrics_directory(os.environ)
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, **{PARENT_ENV: str(os.getpid())})

    def start(index):
        fd = port.fd()
        return subprocess.Popen(worker_command(config_path, index, listen, fd), env=env, pass_fds=(fd,))

    procs = {i: start(i) for i in range(count)}
    monitor = None
    if metrics_listen:
        from agi.ops.monitor import MergedView, MonitorServer

        view = MergedView(metrics_dir, lambda: sum(p.poll() is None for p in procs.values()), count)
        monitor = MonitorServer(metrics_listen, view).start()
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    log.info("started %d FastAGI workers: %s", count, ", ".join(str(p.pid) for p in procs.values()))
    ready = False
    while not stopping:
        if not ready and port.listening():      # a worker has started and takes calls
            systemd.notify("READY=1\nSTATUS=%d FastAGI workers" % count)
            ready = True
        dead = [index for index, proc in procs.items() if proc.poll() is not None]
        if dead:
            _restart(procs, dead, port, start, metrics_dir)
        time.sleep(0.2)
    systemd.notify("STOPPING=1\nSTATUS=draining")
    # The port closes as soon as the draining workers close their copies: a call arriving during
    # the drain is refused at once (Asterisk goes on) instead of waiting in a queue nobody reads.
    port.close()
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        proc.wait()
    if monitor is not None:
        monitor.stop()
    if own_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _restart(procs, dead, port, start, metrics_dir):
    if len(dead) == len(procs):
        port.close()            # no worker left: refuse calls until one runs again
    for index in dead:
        log.error("worker %d (pid %d) exited with %s; restarting", index, procs[index].pid, procs[index].returncode)
        _forget_worker(procs[index].pid, metrics_dir)
    time.sleep(RESTART_DELAY)
    for index in dead:
        try:
            procs[index] = start(index)
        except ConfigError as exc:          # the port was taken meanwhile: tried again next round
            log.error("worker %d not restarted: %s", index, exc)


class SharedPort:
    """The FastAGI socket the workers share, bound while a worker runs and listening from when
    the first of them is ready (agi/fastagi/server.py make_listener).  Asterisk waits for an AGI
    server's first command without a time limit: with no worker ready, a call queued on a socket
    nobody reads would hold its caller in silence, where a refused one goes on in the dialplan."""

    def __init__(self, address):
        self.address = address
        self.sock = _listen(address)

    def fd(self):
        """The socket's descriptor; bound again if it was closed."""
        if self.sock is None:
            self.sock = _listen(self.address)
        return self.sock.fileno()

    def listening(self):
        from agi.fastagi.server import is_listening

        return self.sock is not None and is_listening(self.sock)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _listen(address, wait=None):
    """The shared socket bound to ``address``.  A port in use is waited for ``BIND_WAIT`` s: the
    workers of a crmagi killed just before (SIGKILL cannot be passed on) hold it until they have
    noticed and stopped accepting, about a second (exit_with_parent)."""
    from agi.fastagi.server import make_listener

    deadline = time.monotonic() + (BIND_WAIT if wait is None else wait)
    while True:
        try:
            return make_listener(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise ConfigError("config [agi] listen: cannot listen on %s:%d (%s)" % (
                address[0], address[1], exc.strerror or exc)) from None


def metrics_directory(environ):
    """(directory, made here).  PROMETHEUS_MULTIPROC_DIR when set (emptied: files of an earlier
    run would add old counts to this one's), else a fresh temporary directory."""
    given = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        return tempfile.mkdtemp(prefix="crmagi-metrics-"), True
    os.makedirs(given, exist_ok=True)
    for path in glob.glob(os.path.join(given, "*.db")):
        os.unlink(path)
    return given, False


def _forget_worker(pid, metrics_dir):
    """A dead worker's gauges leave the merged view; its counters stay (totals never go back)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def worker_spool(path, index):
    """Each worker keeps its own spool file: SQLite locking across processes is not wanted here."""
    root, ext = os.path.splitext(path)
    return "%s.w%d%s" % (root, index, ext or ".sqlite")


def exit_with_parent(interval=1.0):
    """In a worker: drain and exit (SIGTERM to itself) once the parent is gone.  A parent
    killed with SIGKILL (a benchmark's stop, an OOM kill) cannot pass SIGTERM on, and an
    orphaned worker would keep the port, its AMI login and its database connections."""
    import gevent

    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def watch():
        while os.getppid() == parent:
            gevent.sleep(interval)
        log.error("the parent process %d is gone: draining and exiting", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    return gevent.spawn(watch)
