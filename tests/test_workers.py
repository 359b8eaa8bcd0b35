"""Tier c: `crmagi serve` with [agi] workers = 2: two processes on one port, both answering."""
import signal
import socket
import subprocess
import sys
import time

from agi.simulator import SimulatedCall
from agi.workers import worker_spool


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_worker_spool_names():
    assert worker_spool("/var/lib/crmagi/spool.sqlite", 1) == "/var/lib/crmagi/spool.w1.sqlite"


def test_two_workers_share_the_port_and_stop_on_sigterm(crm_url, tmp_path):
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nworkers = 2\nspool = crmagi-spool.sqlite\n"
                   % (crm_url, port))
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)],
                            stderr=subprocess.PIPE, text=True)
    try:
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
        spools = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("crmagi-spool"))
        assert any(".w0." in name for name in spools) and any(".w1." in name for name in spools)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
