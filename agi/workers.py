"""`crmagi serve` with ``[agi] workers`` > 1: one process per core on one port.

Python runs one core per process, so each worker is a whole `crmagi serve`
(its own gevent hub, database pool and spool file) binding the same port with
SO_REUSEPORT; the kernel spreads the connections.  This parent only starts
them, restarts one that dies, and passes SIGTERM/SIGINT on.
"""
import logging
import os
import signal
import subprocess
import sys
import time

from . import systemd

log = logging.getLogger("crmagi.workers")
RESTART_DELAY = 1.0


def worker_command(config_path, index, listen=None):
    cmd = [sys.executable, "-m", "agi.cli", "serve", "--worker", str(index)]
    if config_path:
        cmd += ["-c", config_path]
    if listen:
        cmd += ["--listen", listen]
    return cmd


def run_workers(config_path, count, listen=None):
    """Run ``count`` workers until SIGTERM/SIGINT; returns the exit status."""
    procs = {i: subprocess.Popen(worker_command(config_path, i, listen)) for i in range(count)}
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    log.info("started %d FastAGI workers: %s", count, ", ".join(str(p.pid) for p in procs.values()))
    # Ready once started: the workers bind at once, and a worker that cannot is restarted below.
    systemd.notify("READY=1\nSTATUS=%d FastAGI workers" % count)
    while not stopping:
        for index, proc in list(procs.items()):
            if proc.poll() is not None:
                log.error("worker %d (pid %d) exited with %s; restarting", index, proc.pid, proc.returncode)
                time.sleep(RESTART_DELAY)
                procs[index] = subprocess.Popen(worker_command(config_path, index, listen))
        time.sleep(0.2)
    systemd.notify("STOPPING=1\nSTATUS=draining")
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        proc.wait()
    return 0


def worker_spool(path, index):
    """Each worker keeps its own spool file: SQLite locking across processes is not wanted here."""
    root, ext = os.path.splitext(path)
    return "%s.w%d%s" % (root, index, ext or ".sqlite")
