"""Fault campaign: full calls at a steady rate while the CRM database, crmagi and the AMI
link are broken on a schedule, then a reconciliation of every call against SuiteCRM.

It starts everything it needs and owns it: a PRIVATE MariaDB (Debian's mariadbd on a
temp datadir and a free loopback port: bench/faults_db.py) loaded with the real SuiteCRM
7.14.6 schema and sample rows plus seeded contacts, accounts and leads with numbers and
owners; `crmagi serve` as a subprocess (spool, [agi] timeout, [ami] on the fake AMI); a
fake AMI server that plays each call's recorded events with the call's own linkedid
(bench/faults_ami.py); and a driver process that places the calls the way Asterisk
does (bench/faults_calls.py, on bench/agi_dialogue.py).  Faults, each on by default:

  db-kill      kill -9 mariadbd, start it again (InnoDB crash recovery)
  db-stop      shut mariadbd down for --db-stop-seconds (30), then start it
  db-lock      LOCK TABLES calls WRITE from another connection for --lock-seconds (10)
  crmagi-kill  kill -9 crmagi (every process of it), start it again after --crmagi-down
  ami-drop     the fake AMI closes crmagi's socket (crmagi reconnects)
  down-crash   the database fails (--down-crash-mode: lock = LOCK TABLES calls WRITE,
               stop = shut down, freeze = SIGSTOP), kill -9 crmagi --down-crash-after s later
               (calls taken meanwhile wait to be written), restart crmagi, then the database
  db-freeze    (off by default) SIGSTOP mariadbd for --freeze-seconds: a hung server

The faults come one after another over the middle of the run (10 % .. 80 % of --duration),
each followed by a quiet time as long as its outage (--fault-gap at least), repeated as
often as fits.  At the end it waits (at most --drain s) for crmagi's spool to empty,
reconciles (bench/faults_report.py) and prints: placed, written, wrong, duplicated,
missing, max answer time, answers over timeout + 50 ms, faults injected.  Exit status 1
when a call is missing, duplicated or wrong.  Loopback only; bounded in time; every
process and temp dir it made is removed at the end, on Ctrl-C too.

AGI sessions that crmagi refused, or that a kill -9 of crmagi cut, are "crmagi down", not
slow answers: Asterisk goes on at once (AGISTATUS=FAILURE).  A call whose first request was
refused is rebuilt by its hangup request; one whose hangup request was refused is kept in
AstDB by the include and collected by a later hangup request; both are checked like any
call.  Only a hangup request cut in the middle by kill -9 leaves nothing to finish with:
those are counted apart (and checked for duplicates).

    python bench/faults.py --rate 50 --duration 60
    python bench/faults.py --rate 200 --duration 600 --workers 2 --json /tmp/faults.json
    python bench/faults.py --rate 20 --duration 30 --db-stop-seconds 5 --lock-seconds 3 --db-freeze
"""
import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

from common import (SHARED, _wait_port, children, cpu_seconds, free_port, machine_busy_seconds,  # noqa: E402
                    sigterm_like_ctrl_c)
from faults_ami import AmiFeed, Scenario  # noqa: E402
from faults_calls import make_plan  # noqa: E402
from faults_db import PrivateMariaDB, hold_lock, seed_records  # noqa: E402
from faults_report import count_calls, fetch, print_table, reconcile  # noqa: E402

KINDS = ("db-kill", "crmagi-kill", "db-lock", "ami-drop", "db-stop", "down-crash", "db-freeze")
DEFAULT_OFF = ("db-freeze",)
DATABASE = "suitecrm"
SYSTEM_NAME = "faults"
VIRTUAL = "crmagi-virtual-account"
AMI_SECTION = ("[ami]\nhost = 127.0.0.1\nport = %d\nusername = crm\nsecret = crmsecret\ntimeout = 2\n"
               "inbound_contexts = from-pstn\noutbound_contexts = from-internal\n")


class Crmagi:
    """`crmagi serve` of this checkout as its own process group, so kill -9 takes every worker."""

    def __init__(self, ini, port, log):
        self.ini, self.port, self.log, self.proc = ini, port, log, None
        self.cpu_of_dead = 0.0      # CPU seconds of the processes killed or stopped so far

    def cpu(self):
        """CPU seconds of every crmagi process so far, the killed ones included."""
        if self.proc is None or self.proc.poll() is not None:
            return self.cpu_of_dead
        return self.cpu_of_dead + sum(cpu_seconds(p) for p in [self.proc.pid] + children(self.proc.pid))

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-c", str(self.ini)],
                                         cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        _wait_port(self.port, timeout=30)

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_of_dead = self.cpu()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.cpu_of_dead = self.cpu()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()


def write_ini(path, db, agi_port, ami_port, spool, args):
    path.write_text(
        "[crm]\nurl = %s\nconnect_timeout = 1\nquery_timeout = %g\n"
        "[agi]\nlisten = 127.0.0.1:%d\ntimeout = %g\nspool = %s\nflush_interval = 1\nworkers = %d\n"
        "system_name = %s\n"
        "[lookup]\ndefault_region = DE\nanonymous_account = %s\n"
        "%s" % (
            db.url(DATABASE), args.query_timeout, agi_port, args.timeout, spool, args.workers, SYSTEM_NAME,
            VIRTUAL, AMI_SECTION % ami_port if args.ami else ""))
    return path


def schedule(kinds, duration, outage, gap):
    """(offset s, kind) pairs: every enabled kind in turn over 10 %..80 % of the run, each
    fault followed by a quiet time as long as its outage (at least ``gap`` s) in which the
    backlog it caused can drain; as many rounds as fit.  When one round does not fit (a
    short CI run), one round spread evenly."""
    if not kinds:
        return []
    start, end = 0.1 * duration, 0.8 * duration
    out, at = [], start
    while True:
        for kind in kinds:
            if at + outage[kind] > end:
                if len(out) >= len(kinds):
                    return out
                return [(start + n * (end - start) / len(kinds), k) for n, k in enumerate(kinds)]
            out.append((at, kind))
            at += outage[kind] + max(gap, outage[kind])


class Campaign:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="crmagi-faults-"))
        self.db = self.crmagi = self.ami = self.driver = None
        self.faults, self.down_windows = [], []
        self.stopping = threading.Event()

    # -- set-up ---------------------------------------------------------------
    def prepare(self):
        args = self.args
        self.db = PrivateMariaDB(self.tmp / "db").install()
        self.db.load_suitecrm(DATABASE, SHARED / "fixtures" / "suitecrm")
        self.seeded = seed_records(self.db, DATABASE, args.records)
        conn = self.db.connect(DATABASE)
        try:
            self.calls_before = count_calls(conn)
        finally:
            conn.close()
        self.ami = AmiFeed()
        self.scenarios = {}
        port = free_port()
        self.spool = self.tmp / "spool.sqlite"
        ini = write_ini(self.tmp / "crmagi.ini", self.db, port, self.ami.port, self.spool, args)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-m", "agi.cli", "check", "-c", str(ini), "--fix"], cwd=str(REPO), env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.crmagi = Crmagi(ini, port, self.tmp / "serve.log")
        self.crmagi.start()
        time.sleep(args.warmup)

    # -- the run --------------------------------------------------------------
    def run(self):
        args = self.args
        self.prepare()
        epoch = int(time.time())
        mix = {"outbound_share": args.outbound_share, "anonymous_share": args.anonymous_share,
               "unknown_share": args.unknown_share, "hold": (args.hold_min, args.hold_max)}
        self.plan = make_plan(args.rate, args.duration, args.seed, self.seeded, epoch, **mix)
        self.start_at = time.time() + 1.0
        cfg = {"rate": args.rate, "duration": args.duration, "seed": args.seed, "seeded": self.seeded,
               "epoch": epoch, "mix": mix, "start_at": self.start_at, "address": ["127.0.0.1", self.crmagi.port],
               "timeout": args.session_limit, "concurrency": args.concurrency, "down_hold": args.down_hold}
        self.driver = subprocess.Popen([sys.executable, str(BENCH / "faults_calls.py")], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, cwd=str(REPO),
                                       env=dict(os.environ, PYTHONPATH="%s%s%s" % (BENCH, os.pathsep, REPO)))
        threads = [threading.Thread(target=self._inject, daemon=True)]
        if args.ami:
            threads.append(threading.Thread(target=self._feed_ami, args=(epoch,), daemon=True))
        for thread in threads:
            thread.start()
        cpu0 = {"crmagi": self.crmagi.cpu(), "harness": sum(os.times()[:2]), "busy": machine_busy_seconds()}
        out, _ = self.driver.communicate(json.dumps(cfg).encode())
        cpu = {"crmagi": self.crmagi.cpu() - cpu0["crmagi"], "harness": sum(os.times()[:2]) - cpu0["harness"],
               "busy": machine_busy_seconds() - cpu0["busy"], "wall": time.time() - self.start_at}
        if self.driver.returncode != 0:
            raise RuntimeError("call driver failed (exit %s)" % self.driver.returncode)
        driven = json.loads(out)
        threads[0].join()            # a fault still running ends before the drain
        spool_left = self._drain()
        self.crmagi.kill9()          # what it has not written by now stays in its spool: a snapshot
        conn = self.db.connect(DATABASE)
        try:
            rows = fetch(conn, epoch, self.calls_before)
        finally:
            conn.close()
        verdict = reconcile(self.plan, driven["calls"], rows, SYSTEM_NAME, VIRTUAL, self.down_windows,
                            args.timeout * 1000.0 + 50.0, self.faults)
        starts = [c["in"]["t0"] for c in driven["calls"] if "in" in c]
        span = (max(starts) - min(starts)) if len(starts) > 1 else 0.0
        by_kind = {}
        for fault in self.faults:
            if not fault.get("error"):
                by_kind[fault["kind"]] = by_kind.get(fault["kind"], 0) + 1
        return {"rate": args.rate, "duration": args.duration, "timeout": args.timeout, "workers": args.workers,
                "verdict": verdict, "faults": self.faults, "faults_by_kind": by_kind, "late": driven["late"],
                "achieved_rate": (len(starts) - 1) / span if span else 0.0, "spool_left": spool_left,
                "spool_dead": self._spooled("dead"), "cpu": dict(cpu, driver=driven["cpu"]),
                "ami": {"connections": self.ami.connections, "drops": self.ami.drops,
                        "calls_streamed": self.ami.sent_calls, "calls_unseen": self.ami.skipped_calls},
                "server_log": self._log_summary()}

    def _feed_ami(self, epoch):
        """Each call's recorded events, halfway through its talk time, on the live AMI link."""
        for call in sorted(self.plan, key=lambda c: c["at"] + c["hold"] / 2):
            due = self.start_at + call["at"] + call["hold"] / 2
            if self.stopping.wait(max(0.0, due - time.time())):
                return
            scenario = self.scenarios.get(call["scenario"])
            if scenario is None:
                path = SHARED / "fixtures" / "asterisk" / ("%s.ami.txt" % call["scenario"])
                scenario = self.scenarios[call["scenario"]] = Scenario(path)
            self.ami.send_call(scenario, call["linkedid"], call["serial"], epoch)

    def _inject(self):
        args = self.args
        outage = {"db-kill": args.db_kill_down + 1, "crmagi-kill": args.crmagi_down + 2, "db-lock": args.lock_seconds,
                  "ami-drop": 0.0, "db-stop": args.db_stop_seconds + 1, "db-freeze": args.freeze_seconds,
                  "down-crash": args.down_crash_after + args.crmagi_down + 5}
        for offset, kind in schedule(self.enabled, args.duration, outage, args.fault_gap):
            if self.stopping.wait(max(0.0, self.start_at + offset - time.time())):
                return
            began = time.time()
            fault = {"kind": kind, "at": began - self.start_at, "start": began}
            try:
                self._fault(kind)
            except Exception as exc:    # noqa: BLE001 - reported in the table, the run goes on
                fault["error"] = "%s: %s" % (type(exc).__name__, exc)
            fault["end"] = time.time()
            fault["took"] = fault["end"] - began
            self.faults.append(fault)

    def _fault(self, kind):
        args, db = self.args, self.db
        if kind == "db-kill":
            db.kill9()
            time.sleep(args.db_kill_down)
            db.start()
        elif kind == "db-stop":
            db.stop()
            self.stopping.wait(args.db_stop_seconds)
            db.start()
        elif kind == "db-freeze":
            db.pause(True)
            try:
                self.stopping.wait(args.freeze_seconds)
            finally:
                db.pause(False)
        elif kind == "db-lock":
            hold_lock(db, DATABASE, "calls", args.lock_seconds, self.stopping)
        elif kind == "crmagi-kill":
            self._crash()
        elif kind == "down-crash":
            self._down_crash(args.down_crash_mode)
        elif kind == "ami-drop":
            self.ami.drop()

    def _down_crash(self, mode):
        """The database fails (shut down, or calls locked, or hung), crmagi is killed while
        calls wait to be written, restarts, and the database comes back."""
        args, db = self.args, self.db
        locker = None
        if mode == "stop":
            db.stop()
        elif mode == "freeze":
            db.pause(True)
        else:
            release = threading.Event()
            locker = threading.Thread(target=hold_lock, args=(db, DATABASE, "calls", 3600, release), daemon=True)
            locker.start()
        try:
            self.stopping.wait(args.down_crash_after)
            self._crash()
            self.stopping.wait(2.0)
        finally:
            if locker is not None:
                release.set()
                locker.join(10)
            db.pause(False)
            db.start()

    def _crash(self):
        """kill -9 every crmagi process, start it again; AGI sessions meanwhile are 'crmagi down'."""
        killed = time.time()
        try:
            self.crmagi.kill9()
            time.sleep(self.args.crmagi_down)
            self.crmagi.start()
        finally:
            self.down_windows.append((killed, time.time()))

    @property
    def enabled(self):
        kinds = [k for k in KINDS if getattr(self.args, k.replace("-", "_"))]
        return kinds if self.args.ami else [k for k in kinds if k != "ami-drop"]

    def _drain(self):
        """Wait until every spool file of crmagi is empty (or --drain s pass): ops left."""
        deadline = time.monotonic() + self.args.drain
        while True:
            left = self._spooled()
            if left == 0 or time.monotonic() > deadline:
                time.sleep(1.0)    # a write that was in flight when the spool was read
                return self._spooled()
            time.sleep(0.5)

    def _spooled(self, table="ops"):
        total = 0
        for path in self.tmp.glob("spool*.sqlite"):
            try:
                with sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5) as conn:
                    total += conn.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
            except sqlite3.Error:     # no such table (an older spool), or busy
                continue
        return total

    def _log_summary(self):
        log = self.tmp / "serve.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        bad = [line for line in lines if (" ERROR " in line or "Traceback" in line)]
        return {"lines": len(lines), "errors": len(bad), "examples": bad[:5]}

    def cleanup(self):
        self.stopping.set()
        if self.driver is not None and self.driver.poll() is None:
            self.driver.kill()
            self.driver.wait(5)
        if self.crmagi is not None:
            self.crmagi.stop()
        if self.ami is not None:
            self.ami.close()
        if self.db is not None:
            self.db.pause(False)
            self.db.stop()
        if self.args.keep:
            print("kept %s" % self.tmp, file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--rate", type=float, default=50.0, help="calls started per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of calls")
    p.add_argument("--workers", type=int, default=1, help="crmagi [agi] workers")
    p.add_argument("--timeout", type=float, default=0.5, help="crmagi [agi] timeout")
    p.add_argument("--query-timeout", type=float, default=2.0, help="crmagi [crm] query_timeout")
    p.add_argument("--records", type=int, default=200, help="seeded records per module")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--outbound-share", type=float, default=0.2)
    p.add_argument("--anonymous-share", type=float, default=0.1)
    p.add_argument("--unknown-share", type=float, default=0.2)
    p.add_argument("--hold-min", type=float, default=0.2, help="seconds between the first AGI and the hangup")
    p.add_argument("--hold-max", type=float, default=1.0)
    p.add_argument("--down-hold", type=float, default=10.0,
                   help="seconds a call whose first AGI was refused goes on before its hangup AGI")
    p.add_argument("--session-limit", type=float, default=60.0,
                   help="seconds the driver waits for one AGI session (Asterisk waits for ever)")
    p.add_argument("--concurrency", type=int, default=3000, help="calls in flight at most")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the spool to empty")
    p.add_argument("--fault-gap", type=float, default=10.0,
                   help="quiet seconds after a fault, at least (the fault's own outage if longer)")
    p.add_argument("--db-stop-seconds", type=float, default=30.0)
    p.add_argument("--lock-seconds", type=float, default=10.0)
    p.add_argument("--freeze-seconds", type=float, default=10.0)
    p.add_argument("--db-kill-down", type=float, default=1.0, help="seconds between kill -9 and the restart")
    p.add_argument("--crmagi-down", type=float, default=1.0, help="seconds between kill -9 and the restart")
    p.add_argument("--down-crash-after", type=float, default=3.0,
                   help="down-crash: seconds between the database going down and kill -9 of crmagi")
    p.add_argument("--down-crash-mode", choices=("lock", "stop", "freeze"), default="lock")
    for kind in KINDS:
        p.add_argument("--" + kind, dest=kind.replace("-", "_"), action=argparse.BooleanOptionalAction,
                       default=kind not in DEFAULT_OFF, help="inject %s" % kind)
    p.add_argument("--ami", action=argparse.BooleanOptionalAction, default=True,
                   help="crmagi follows the fake AMI, which plays each call's recorded events")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (datadir, serve.log, spool)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    sigterm_like_ctrl_c()
    campaign = Campaign(args)
    try:
        report = campaign.run()
    except KeyboardInterrupt:
        print("interrupted: processes stopped, temp dir removed", file=sys.stderr)
        return 130
    finally:
        campaign.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print_table(report, sys.stdout)
    v = report["verdict"]
    return 1 if v["missing"] or v["duplicated"] or v["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
