"""What bench/load.py reads around a run, apart from the calls themselves: the kernel's TCP
counters (the tail's usual suspects), RSS over time, and the SQL crmagi sends.

* ``tcp_counters()``: ListenOverflows/ListenDrops (the accept queue was full), SYN and data
  retransmissions, RTO timeouts, from /proc/net/netstat and /proc/net/snmp, the counters
  ``nstat -az TcpExtListenOverflows TcpExtTCPSynRetrans TcpExtTCPTimeouts`` shows.  They are
  the whole box's: on loopback, a SYN retransmitted is 1 s (its first RTO) added to a call.
* ``RssSampler``: the server processes' summed RSS every ``interval`` s, in a thread.
* ``SqlLog``: MariaDB's general log into ``mysql.general_log`` (a table) while the run lasts,
  then the commands of the connections that crmagi opened on the benchmark database: each
  row is one round trip; its text may hold several statements (``;``-separated).  The
  general log is the server's, so it is switched on only for a short counting run.
"""
import re
import threading
import time

from common import rss_mb
from crmsync.dialect.mysql import BLOCK_BEGIN
TCP_COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPSynRetrans", "TcpExtTCPTimeouts",
                "TcpRetransSegs")


def tcp_counters():
    """{name: value} of TCP_COUNTERS, as nstat names them."""
    found = {}
    for path, prefix in (("/proc/net/netstat", "TcpExt"), ("/proc/net/snmp", "Tcp")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for head, values in zip(lines[::2], lines[1::2]):
            kind, names = head.split(":", 1)
            if kind != prefix:
                continue
            for name, value in zip(names.split(), values.split(":", 1)[1].split()):
                if prefix + name in TCP_COUNTERS:
                    found[prefix + name] = int(value)
    return found


def counter_delta(before, after):
    return {name: after.get(name, 0) - before.get(name, 0) for name in TCP_COUNTERS}


class RssSampler(threading.Thread):
    """Summed RSS (MB) of ``pids()`` every ``interval`` s: (seconds since start, MB) samples."""

    def __init__(self, pids, interval=1.0):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.samples, self.stopping = [], threading.Event()

    def run(self):
        started = time.monotonic()
        while not self.stopping.is_set():
            self.samples.append((round(time.monotonic() - started, 1), round(sum(rss_mb(p) for p in self.pids()), 1)))
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(5)
        return self.samples

    @property
    def peak(self):
        return max((mb for _, mb in self.samples), default=0.0)


def rss_summary(samples):
    """First/last minute averages and the growth between them (MB), for the "memory flat" check."""
    if not samples:
        return {}
    end = samples[-1][0]
    first = [mb for t, mb in samples if t <= min(60.0, end / 3)]
    last = [mb for t, mb in samples if t >= end - min(60.0, end / 3)]
    avg = lambda v: sum(v) / len(v) if v else float("nan")    # noqa: E731
    return {"seconds": end, "start_mb": avg(first), "end_mb": avg(last), "growth_mb": avg(last) - avg(first),
            "peak_mb": max(mb for _, mb in samples), "samples": len(samples)}


_STATEMENT = re.compile(r"^[\s(]*(\w+)")


def split_statements(text):
    """The statements of one command text (';' outside quotes ends a statement); those of a
    MariaDB compound statement (``BEGIN NOT ATOMIC ...; END``, crmsync/dialect/mysql.py) are
    counted as the statements it holds."""
    if text.startswith(BLOCK_BEGIN):
        return split_statements(text[len(BLOCK_BEGIN):])[:-1]      # without its END
    out, start, quote, i = [], 0, None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
        elif c == ";":
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


class SqlLog:
    """The general log of MariaDB around a run; ``count(database)`` after it."""

    def __init__(self, connect):
        self.connect = connect          # () -> a pymysql connection (autocommit)
        self.started = self.calls_from = None

    def __enter__(self):
        self.started = self._now()
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL log_output = 'TABLE'")
            cur.execute("SET GLOBAL general_log = 1")
        conn.close()
        return self

    def mark(self):
        """The calls start now: what crmagi sent before (its warm-up) is not counted."""
        self.calls_from = self._now()

    def _now(self):
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT NOW(6)")
            now = cur.fetchone()[0]
        conn.close()
        return now

    def __exit__(self, *exc):
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL general_log = 0")
        conn.close()

    def count(self, database, calls):
        """Round trips and statements per call of the connections opened on ``database``,
        by statement verb, from ``mark()`` on; the log rows are deleted afterwards."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT thread_id FROM mysql.general_log WHERE event_time >= %s AND command_type = "
                            "'Connect' AND argument LIKE %s", (self.started, "% on " + database + " %"))
                threads = sorted({row[0] for row in cur.fetchall()})
                rows = []
                if threads:
                    cur.execute("SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log "
                                "WHERE event_time >= %%s AND thread_id IN (%s)" % ",".join(["%s"] * len(threads)),
                                [self.calls_from or self.started] + threads)
                    rows = cur.fetchall()
                cur.execute("TRUNCATE mysql.general_log")
        finally:
            conn.close()
        trips, verbs = 0, {}
        for command, text in rows:
            if command in ("Connect", "Quit", "Init DB"):
                continue
            trips += 1
            statements = split_statements(text or "") if command == "Query" else [command]
            for statement in statements:
                match = _STATEMENT.match(statement)
                verb = (match.group(1) if match else command).upper()
                if verb in ("SET", "SHOW"):       # session set-up: say which
                    verb = " ".join(statement.split()[:2]).upper()
                verbs[verb] = verbs.get(verb, 0) + 1
        total = sum(verbs.values())
        per = (lambda n: round(n / calls, 2)) if calls else (lambda n: None)
        return {"connections": len(threads), "calls": calls, "round_trips": trips, "statements": total,
                "round_trips_per_call": per(trips), "statements_per_call": per(total),
                "per_call_by_verb": {verb: per(n) for verb, n in sorted(verbs.items())}}
