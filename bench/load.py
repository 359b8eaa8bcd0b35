"""FastAGI load generator: full incoming + hangup call cycles against `crmagi serve`, the way
Asterisk 22 drives it, at a paced rate, with each call's AMI events played by a fake AMI;
reports calls/s, AGI answer latency, errors, CPU per call of crmagi, MariaDB and the
generator, RSS over time, the kernel's TCP counters and (``--count-sql``) the round trips
and statements crmagi sent per call.

The parts: bench/agi_dialogue.py (Asterisk's side of each FastAGI session, the lean epoll
engine), bench/load_worker.py (a generator process: its schedule of calls), this file (the
servers, the fake AMI, the readings), bench/load_probes.py (TCP counters, RSS sampler, the
general-log SQL count), bench/load_report.py (the report).  bench/call_path.py runs the
whole set of issue #12's figures with one command.

*AGI answer latency* is what Asterisk waits: from connect until crmagi closes the socket,
for ``incoming`` and for ``hangup``.  Calls are started open-loop at ``--rate`` calls/s for
``--duration`` s (at most ``--concurrency`` calls in flight; a call that finds no free slot
waits and is counted as ``late``), spread over ``--procs`` generator processes.  Errors are
counted by kind with an example: connect failures, timeouts, resets, ``CRM_STATUS=error``
(the server answered without the CRM within its [agi] timeout).  CPU seconds come from
/proc/<pid>/stat (utime+stime of every server pid and its children, of mariadbd, and of the
generator processes; the parent's own, which plays the AMI feed, is reported apart).  With
``--database`` the Call rows written (crmagi_calls, by linkedid) are counted after the run.

``--ami`` (default on with ``--database``): the started server follows a fake AMI
(bench/faults_ami.py) that plays the recorded events of ``--ami-scenario`` for every call,
with the call's own linkedid, ``--ami-delay`` s after the call starts (the listener is part
of the cost of a call).

Loopback only; every loop is bounded by --duration and --timeout; it stops by itself.

    python bench/load.py --database crmagi_bench_1a2b3c4d --samples FILE --rate 200 --duration 60
    python bench/load.py --database DB --samples FILE --workers 2 --rate 400 --duration 30 --count-sql
    # an already running server (pass its pid(s) for CPU/RSS; no AMI feed):
    python bench/load.py --address 127.0.0.1:4573 --server-pid 1234 --samples FILE --rate 50 --duration 10
    # profile the server under load (sample: bench/stack_sampler.py; cprofile; pyspy when installed):
    python bench/load.py --database DB --samples FILE --rate 300 --duration 20 --profile cprofile
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agi_dialogue import serial_of  # noqa: E402
from common import (SHARED, children, cpu_seconds, machine_busy_seconds, pid_of, rss_mb,  # noqa: E402
                    sigterm_like_ctrl_c, start_server, stop_server)
from load_probes import RssSampler, SqlLog, counter_delta, rss_summary, tcp_counters  # noqa: E402
from load_report import _profile_text, _pyspy_summary, aggregate, print_report  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load_worker.py")
AMI_SECTION = "[ami]\nhost = 127.0.0.1\nport = %d\nusername = crm\nsecret = crmsecret\ntimeout = 2\n"


def _connect(database=None):
    import pymysql

    for attempt in range(10):     # the server's own pools may hold most of max_connections
        try:
            return pymysql.connect(host="127.0.0.1", user="root", password="", database=database,
                                   autocommit=True)
        except pymysql.err.OperationalError:
            if attempt == 9:
                raise
            time.sleep(1.0)


def _parse_address(text):
    out = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]") and not host.startswith("127."):
            raise SystemExit("--address %s: loopback only (127.0.0.0/8, localhost, ::1)" % part)
        out.append((host.strip("[]"), int(port)))
    return out


def _server_pids(roots):
    pids = []
    for pid in roots:
        pids.append(pid)
        pids += children(pid)
    return pids


def _cpu(pids):
    return sum(cpu_seconds(p) for p in pids)


def _count_calls(database, epoch):
    # Not connected *on* the database: --count-sql counts the connections that are.
    conn = _connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*), COALESCE(SUM(outcome IS NOT NULL), 0), "
                        "COALESCE(SUM(answered_extension IS NOT NULL), 0), COALESCE(SUM(recording <> ''), 0) "
                        "FROM `%s`.crmagi_calls WHERE linkedid LIKE %%s" % database, ("%d.%%" % epoch,))
            return tuple(int(n) for n in cur.fetchone())
    finally:
        conn.close()


class AmiSchedule(threading.Thread):
    """Plays each call's recorded AMI events at the time the generators start it (the same
    schedule as bench/load_worker.py), plus ``delay`` s."""

    def __init__(self, feed, scenario, base, delay):
        super().__init__(daemon=True)
        self.feed, self.scenario, self.base, self.delay = feed, scenario, base, delay
        self.stopping = threading.Event()

    def times(self):
        base, procs = self.base, self.base["procs"]
        rate = base["rate"] / procs
        total = int(round(base["duration"] * rate))
        out = [(base["start_at"] + k / base["rate"] + i / rate + self.delay, serial_of(k, i))
               for k in range(procs) for i in range(total)]
        return sorted(out)

    def run(self):
        epoch = self.base["epoch"]
        for due, serial in self.times():
            if self.stopping.wait(max(0.0, due - time.time())):
                return
            self.feed.send_call(self.scenario, "%d.%d" % (epoch, serial), serial, epoch)


def _start_servers(args, ami_port, sql_log):
    url = ("mysql+pymysql://root@localhost/%s?unix_socket=%s" % (args.database, args.mysql_socket)
           if args.mysql_socket else "mysql+pymysql://root@127.0.0.1:3306/" + args.database)
    region = args.region
    if not region and args.samples:
        region = json.loads(Path(args.samples).read_text(encoding="utf-8")).get("meta", {}).get("region")
    addresses = [("127.0.0.1", args.port + k) for k in range(args.server_procs)]
    profile_dir = Path(tempfile.mkdtemp(prefix="crmagi-profile-")) if args.profile else None
    servers, workdirs, profiles = [], [], []
    extra = args.server_config + (AMI_SECTION % ami_port if ami_port else "")
    try:
        _start_each(args, url, region, addresses, extra, profile_dir, servers, workdirs, profiles)
        time.sleep(args.warmup + (1.0 if args.workers > 1 else 0.0))    # reflection, users, phonenumbers: _warm_up
    except BaseException:           # stopped while starting: stop what did start
        for proc in servers:
            stop_server(proc)
        raise
    return addresses, servers, workdirs, profiles


def _start_each(args, url, region, addresses, extra, profile_dir, servers, workdirs, profiles):
    for k, (_, port) in enumerate(addresses):
        prefix = ()
        if args.profile == "cprofile":
            profiles.append(profile_dir / ("serve-%d.prof" % port))
            prefix = ("-m", "cProfile", "-o", str(profiles[-1]))
        elif args.profile == "sample":
            profiles.append(profile_dir / ("serve-%d.txt" % port))
            prefix = (os.path.join(os.path.dirname(os.path.abspath(__file__)), "stack_sampler.py"), str(profiles[-1]))
        if args.ablate:
            prefix = (os.path.join(os.path.dirname(os.path.abspath(__file__)), "ablate.py"), args.ablate)
            os.environ["CRMAGI_ABLATE_SAMPLES"] = os.path.abspath(args.samples)
        proc, work = start_server(url, port, extra=extra, region=region or "DE", prefix=prefix,
                                  check=(k == 0), agi="workers = %d\n" % args.workers if args.workers > 1 else "",
                                  crm="".join(line + "\n" for line in args.server_crm))
        servers.append(proc)
        workdirs.append(work)


def _pyspies(args, pids):
    spy = shutil.which("py-spy")
    if not spy:
        raise SystemExit("--profile pyspy: py-spy not found (pip install py-spy), or use --profile cprofile")
    out = []
    for pid in pids:
        raw = Path(tempfile.mkdtemp(prefix="crmagi-pyspy-")) / ("serve-%d.txt" % pid)
        out.append((subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(args.duration) + 1),
                                      "-r", "200", "--format", "raw", "-o", str(raw)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw))
    return out


def _generators(args, base):
    procs = []
    for k in range(args.procs):
        cfg = dict(base, index=k, profile_generator=bool(args.profile_generator and k == 0))
        procs.append(subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
        procs[-1].stdin.write(json.dumps(cfg).encode())
        procs[-1].stdin.close()
    results = []
    try:
        for proc in procs:
            out, err = proc.stdout.read(), proc.stderr.read()
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError("load worker failed (%d): %s" % (proc.returncode, err.decode()[-2000:]))
            results.append(json.loads(out))
    except BaseException:
        # Stopped (SIGTERM, ^C) or failed: a generator left running would go on calling the
        # port for the rest of --duration, where the next run's servers listen.
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    return results


def run(args):
    servers, workdirs, profiles, pyspies, feed, sql_log = [], [], [], [], None, None
    if args.address:
        addresses = _parse_address(args.address)
        roots = list(args.server_pid or [])
    elif args.database:
        if args.ami:
            from faults_ami import AmiFeed, Scenario

            feed = AmiFeed()
            scenario = Scenario(SHARED / "fixtures" / "asterisk" / ("%s.ami.txt" % args.ami_scenario))
        if args.count_sql:
            sql_log = SqlLog(_connect).__enter__()       # before the server's pooled connections open
        addresses, servers, workdirs, profiles = _start_servers(args, feed.port if feed else 0, sql_log)
        roots = [p.pid for p in servers]
    else:
        raise SystemExit("give --address (a running server) or --database (start crmagi serve on it)")
    try:
        pids = _server_pids(roots)
        mysqld = pid_of("mariadbd", "mysqld")
        epoch = int(time.time())
        start_at = time.time() + 1.0 + 0.2 * args.procs
        base = {"rate": args.rate, "duration": args.duration, "concurrency": args.concurrency, "procs": args.procs,
                "addresses": addresses, "samples": args.samples, "present_share": args.present_share,
                "anonymous_share": args.anonymous_share, "seed": args.seed, "timeout": args.timeout,
                "hold": args.hold, "engine": args.engine, "epoch": epoch, "start_at": start_at}
        if args.profile == "pyspy":
            pyspies = _pyspies(args, pids)
        schedule = AmiSchedule(feed, scenario, base, args.ami_delay) if feed else None
        if sql_log:
            sql_log.mark()
        each0 = [cpu_seconds(p) for p in pids]
        cpu0, db0, busy0, own0 = sum(each0), _cpu(mysqld), machine_busy_seconds(), sum(os.times()[:2])
        tcp0 = tcp_counters()
        sampler = RssSampler(lambda: pids, args.rss_interval)
        sampler.start()
        if schedule:
            schedule.start()
        results = _generators(args, base)
        wall_end = time.time()
        each1 = [cpu_seconds(p) for p in pids]
        cpu1, db1, busy1, own1 = sum(each1), _cpu(mysqld), machine_busy_seconds(), sum(os.times()[:2])
        tcp1 = tcp_counters()
        samples = sampler.stop()
        rss_end = sum(rss_mb(p) for p in pids)
        written = None
        if args.database and not args.address:
            written = _wait_writes(args.database, epoch, sum(r["completed"] for r in results), args.drain)
        cpu2, db2 = _cpu(pids), _cpu(mysqld)
        sql = sql_log.count(args.database, sum(r["completed"] for r in results)) if sql_log else None
        for spy, raw in pyspies:
            spy.wait(args.duration + 30)
    finally:
        if schedule:
            schedule.stopping.set()
        if sql_log:
            sql_log.__exit__(None, None, None)
        for proc in servers:
            stop_server(proc)
        if feed:
            feed.close()
    if written and written.get("rows") is not None and feed:
        # After the stop: a server's live updates still queued or spooled are written by then.
        written["answered"], written["recorded"] = _count_calls(args.database, epoch)[2:]
    report = aggregate(args, results, addresses, pids, cpu1 - cpu0, cpu2 - cpu0, db2 - db0, rss_end,
                       sampler.peak, start_at, wall_end, written)
    report["ablate"] = args.ablate
    report["ami"] = {"scenario": args.ami_scenario, "calls_streamed": feed.sent_calls,
                     "calls_unseen": feed.skipped_calls, "feed_cpu_s": own1 - own0} if feed else None
    # Per process (a parent, then its workers in start order): is one worker the bottleneck?
    report["server_cpu_s_each"] = [round(b - a, 2) for a, b in zip(each0, each1)]
    report["tcp"] = counter_delta(tcp0, tcp1)
    report["rss_samples"] = samples
    report["rss"] = rss_summary(samples)
    report["sql"] = sql
    # Whatever else ran on the box meanwhile (other test suites, ...): it competed for the cores.
    report["machine_busy_s"] = busy1 - busy0
    report["other_cpu_s"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (db1 - db0) - report["generator_cpu_s"]
                                - (own1 - own0))
    if profiles:
        summary = _pyspy_summary if args.profile == "sample" else _profile_text
        report["server_profile"] = "\n".join(summary(p, args.profile_lines) for p in profiles if p.exists())
    if pyspies:
        report["server_profile"] = "\n".join(_pyspy_summary(raw, args.profile_lines) for _, raw in pyspies
                                             if raw.exists())
    report.update(_log_warnings(workdirs))
    report["spool_left"] = _spool_left(workdirs)
    report["server_logs"] = [str(w / "serve.log") for w in workdirs] if args.keep_logs else []
    for work in workdirs if not args.keep_logs else ():
        shutil.rmtree(work, ignore_errors=True)
    return report


def _spool_left(workdirs):
    """What the stopped servers left in their spools (ops the CRM has not taken yet, dead
    letters): read before the work folders go, or a backlog would pass for lost calls."""
    from crmsync.spool import Spool

    left = {"pending": 0, "dead": 0, "kinds": {}}
    for path in sorted(f for work in workdirs for f in work.glob("spool*.sqlite")):
        spool = Spool(path)
        try:
            ops = spool.pending(limit=10 ** 9)      # every op left, in flight or waiting
            left["pending"] += len(ops)
            left["dead"] += spool.stats().dead
            for op in ops:
                left["kinds"][op.kind] = left["kinds"].get(op.kind, 0) + 1
        finally:
            spool.close()
    return left


def _log_warnings(workdirs):
    lines = []
    for work in workdirs:
        log = work / "serve.log"
        if log.exists():
            lines += [line for line in log.read_text(errors="replace").splitlines()
                      if (" WARNING " in line or " ERROR " in line)
                      and "<no env>" not in line]   # start_server's port probe: connect, close
    return {"server_log_warnings": len(lines), "server_log_examples": lines[:5],
            "server_log_errors": sum(" ERROR " in line for line in lines)}


def _wait_writes(database, epoch, completed, drain):
    """Poll crmagi_calls until every completed call has its finished row, or ``drain`` s pass."""
    deadline, last = time.monotonic() + drain, (0, 0)
    while True:
        try:
            last = _count_calls(database, epoch)
        except Exception as exc:
            return {"rows": None, "finished": None, "completed_calls": completed, "error": str(exc)}
        if last[1] >= completed or time.monotonic() > deadline:
            return {"rows": last[0], "finished": last[1], "completed_calls": completed}
        time.sleep(0.5)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_argument_group("server")
    target.add_argument("--address", help="running server(s): host:port[,host:port...] (loopback only)")
    target.add_argument("--server-pid", type=int, action="append", help="pid of that server (repeatable)")
    target.add_argument("--database", help="start crmagi serve on this SuiteCRM database")
    target.add_argument("--workers", type=int, default=1,
                        help="[agi] workers of the started server: processes sharing the port (SO_REUSEPORT)")
    target.add_argument("--server-procs", type=int, default=1,
                        help="separate crmagi serve processes on ports --port, --port+1, ... (calls round-robin)")
    target.add_argument("--port", type=int, default=14600)
    target.add_argument("--region", help="[lookup] default_region (default: the sample file's, else DE)")
    target.add_argument("--mysql-socket", help="the started server reaches MariaDB through this Unix socket "
                                               "(e.g. /run/mysqld/mysqld.sock) instead of TCP on 127.0.0.1")
    target.add_argument("--server-config", default="", help="extra INI text for the started server(s)")
    target.add_argument("--server-crm", action="append", default=[], metavar="KEY=VALUE",
                        help="a [crm] line for the started server(s), e.g. pool_size=40 (repeatable)")
    target.add_argument("--ablate", metavar="PARTS", help="start crmagi without these parts of a call's work "
                        "(spool,parse,metrics: bench/ablate.py; one worker, no --profile)")
    target.add_argument("--warmup", type=float, default=2.0, help="seconds after start before calling")
    target.add_argument("--drain", type=float, default=20.0, help="seconds to wait for the Call rows")
    p.add_argument("--samples", help="caller numbers (generate.py's sample file)")
    p.add_argument("--rate", type=float, default=200.0, help="calls/s started (open loop, all procs)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of calls")
    p.add_argument("--concurrency", type=int, default=1000, help="calls in flight at most (all procs)")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--engine", choices=("lean", "simulator"), default="lean")
    p.add_argument("--hold", type=float, default=0.0, help="seconds between incoming and hangup (talk time)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds one AGI session may take")
    p.add_argument("--present-share", type=float, default=0.75)
    p.add_argument("--anonymous-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", choices=("cprofile", "pyspy", "sample"), help="profile the started server(s)")
    p.add_argument("--profile-lines", type=int, default=25)
    p.add_argument("--profile-generator", action="store_true", help="cProfile generator process 0")
    p.add_argument("--ami", action=argparse.BooleanOptionalAction, default=True,
                   help="the started server follows a fake AMI playing each call's recorded events")
    p.add_argument("--ami-scenario", default="01-inbound-answered", help="shared/fixtures/asterisk recording")
    p.add_argument("--ami-delay", type=float, default=0.1, help="seconds after a call starts its events are sent")
    p.add_argument("--count-sql", action="store_true",
                   help="count round trips and statements per call (MariaDB's general log; a short run)")
    p.add_argument("--keep-logs", action="store_true", help="keep the started servers' serve.log (paths printed)")
    p.add_argument("--rss-interval", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--json", help="write the report as JSON to this file")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    sigterm_like_ctrl_c()
    if args.ablate and (args.workers > 1 or args.profile or not args.samples):
        raise SystemExit("--ablate: one worker (its workers would start without it), no --profile, --samples given")
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted: the servers and load generators started are stopped", file=sys.stderr)
        raise SystemExit(130)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print_report(report)
    for path in report["server_logs"]:
        print("  server log kept: %s" % path)
    for key in ("server_profile", "generator_profile"):
        if report.get(key):
            print("\n--- %s ---\n%s" % (key, report[key]))


if __name__ == "__main__":
    main()