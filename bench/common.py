"""Shared set-up for the benchmark scripts: a SuiteCRM database in the local MariaDB and a
`crmagi serve` process to measure (a separate process, so the load generator does not steal its CPU)."""
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRMAGI_SHARED", REPO.parent / "shared"))
MARIADB = ["mariadb", "-h", "127.0.0.1", "-uroot"]


def create_database(prefix="crmagi_bench_"):
    name = prefix + uuid.uuid4().hex[:8]
    subprocess.run(MARIADB + ["-e", "CREATE DATABASE %s CHARACTER SET utf8mb3" % name], check=True)
    for part in ("schema.sql", "sample-data.sql"):
        with open(SHARED / "fixtures" / "suitecrm" / part, "rb") as handle:
            subprocess.run(MARIADB + [name], stdin=handle, check=True)
    return name, "mysql+pymysql://root@127.0.0.1:3306/" + name


def drop_database(name):
    subprocess.run(MARIADB + ["-e", "DROP DATABASE IF EXISTS %s" % name], check=True)


def sql(database, statement):
    subprocess.run(MARIADB + [database, "-e", statement], check=True)


def start_server(url, port, extra=""):
    """Run `crmagi serve` with a fresh config; returns (process, workdir)."""
    work = Path(tempfile.mkdtemp(prefix="crmagi-bench-"))
    ini = work / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\nspool = spool.sqlite\n"
                   "[lookup]\ndefault_region = DE\n%s" % (url, port, extra))
    subprocess.run([sys.executable, "-m", "agi.cli", "check", "-c", str(ini), "--fix"], check=True,
                   stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"))
    _wait_port(port)
    return proc, work


def _wait_port(port, timeout=15):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("crmagi serve did not listen on %d" % port)


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]
