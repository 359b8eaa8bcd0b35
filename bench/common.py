"""Shared set-up for the benchmark scripts: a SuiteCRM database in the local MariaDB and a
`crmagi serve` process to measure (a separate process, so the load generator does not steal its CPU)."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRMAGI_SHARED", REPO.parent / "shared"))
MARIADB = ["mariadb", "-h", "127.0.0.1", "-uroot"]


def frames(sock, separator, size=65536):
    """What a peer sends, cut at ``separator`` (a FastAGI line, an AMI frame), until it closes."""
    buf = b""
    while True:
        data = sock.recv(size)
        if not data:
            return
        buf += data
        while separator in buf:
            frame, buf = buf.split(separator, 1)
            yield frame


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


def write_config(url, path, port=4573, region="DE", extra="", agi="", crm=""):
    """A crmagi INI for the benchmark database (spool next to it).

    ``agi``/``crm``: more ``key = value`` lines for those sections; ``extra``: more sections."""
    path = Path(path)
    if "[metrics]" not in extra:      # /metrics on a free port: several servers may run at once
        extra += "[metrics]\nlisten = 127.0.0.1:0\n"
    path.write_text("[crm]\nurl = %s\n%s[agi]\nlisten = 127.0.0.1:%d\nspool = spool.sqlite\n%s"
                    "[lookup]\ndefault_region = %s\n%s" % (url, crm, port, agi, region, extra))
    return path


def start_server(url, port, extra="", region="DE", prefix=(), check=True, agi="", crm=""):
    """Run `crmagi serve` with a fresh config; returns (process, workdir).

    ``prefix``: arguments put before ``-m agi.cli serve`` (e.g. ``-m cProfile -o FILE``)."""
    work = Path(tempfile.mkdtemp(prefix="crmagi-bench-"))
    ini = write_config(url, work / "crmagi.ini", port, region, extra, agi, crm)
    if check:
        subprocess.run([sys.executable, "-m", "agi.cli", "check", "-c", str(ini), "--fix"], check=True,
                       stdout=subprocess.DEVNULL, cwd=str(REPO))
    proc = subprocess.Popen([sys.executable, *prefix, "-m", "agi.cli", "serve", "-c", str(ini)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"), cwd=str(REPO))
    try:
        _wait_port(port)
    except BaseException as exc:        # not listening, or the bench stopped (SIGTERM, ^C) meanwhile
        proc.kill()
        if isinstance(exc, RuntimeError):
            raise RuntimeError("crmagi serve did not listen on %d; log: %s" % (port, work / "serve.log")) from exc
        raise
    return proc, work


def sigterm_like_ctrl_c():
    """``kill`` unwinds the bench as Ctrl-C does, so its ``finally`` blocks stop the servers and
    load generators it started (left running, a generator goes on calling the port where the
    next run's servers listen)."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(*_):
    raise KeyboardInterrupt()


def stop_server(proc, timeout=15):
    """SIGTERM (crmagi drains sessions and flushes the spool), then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def index_cli_available():
    """True when `crmagi index` exists (issue #3's trigger-kept phone index)."""
    result = subprocess.run([sys.executable, "-m", "agi.cli", "index", "--help"], cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return result.returncode == 0


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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid):
    """Resident memory of one process in MB (0 when it is gone)."""
    try:
        return _rss_mb(pid)
    except OSError:
        return 0.0


def _rss_mb(pid):
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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of one process from /proc/<pid>/stat (0 when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds():
    """CPU seconds all cores spent busy (not idle/iowait) since boot, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def children(pid):
    """Every descendant pid of pid (workers a server forked), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pid_of(*names):
    """Pids whose /proc/<pid>/comm is one of names (e.g. mariadbd)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as handle:
                    if handle.read().strip() in names:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def machine():
    """'2 cores, 24 GB RAM, MariaDB 10.11.x (buffer pool 128 MB)' for report headers."""
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    try:
        out = subprocess.run(MARIADB + ["-N", "-e", "SELECT VERSION(), @@innodb_buffer_pool_size"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        version, pool = out[0], "%d MB" % (int(out[1]) // 2 ** 20)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        version, pool = "?", "?"
    return "%d cores, %.0f GB RAM, MariaDB %s (innodb_buffer_pool_size %s)" % (
        os.cpu_count(), mem_kb / 1024.0 / 1024.0, version, pool)


class Progress:
    """A one-line progress bar on stderr: done/total, rate, ETA (plain lines when not a tty)."""

    def __init__(self, label, total, unit="rows", stream=None):
        self.label, self.total, self.unit = label, max(1, total), unit
        self.stream = stream or sys.stderr
        self.started = self._last = time.monotonic()
        self.done, self._tty, self._last_pct = 0, self.stream.isatty(), -10

    def update(self, done):
        self.done = done
        now = time.monotonic()
        pct = 100.0 * done / self.total
        if self._tty and now - self._last < 0.2 and done < self.total:
            return
        if not self._tty and pct - self._last_pct < 10 and done < self.total:
            return
        self._last, self._last_pct = now, pct
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        bar = "#" * int(width * done / self.total)
        line = "%-10s [%-*s] %5.1f%% %d/%d %s  %.0f %s/s  ETA %s" % (
            self.label, width, bar, pct, done, self.total, self.unit, rate, self.unit,
            "%.0fs" % eta if eta != float("inf") else "?")
        self.stream.write(("\r" + line) if self._tty else line + "\n")
        self.stream.flush()

    def close(self):
        self.update(self.total)
        if self._tty:
            self.stream.write("\n")
        return time.monotonic() - self.started
