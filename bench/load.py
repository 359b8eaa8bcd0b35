"""FastAGI load generator: full incoming + hangup call cycles against `crmagi serve`, the way
Asterisk 22 drives it, at a paced rate; reports calls/min, AGI answer latency, errors, and the
server's CPU and memory.

Every call is what crmagi's dialplan include makes Asterisk do (agi/simulator.py SimulatedCall):
the ``incoming`` FastAGI session on a fresh channel (env block from ``agi.simulator.env_block``,
byte for byte Asterisk 22's; the caller ID from the generator's sample file: present numbers in
trunk formats, known-absent ones, withheld ones), then Dial's results are set on the channel
(DIALSTATUS ANSWER/NOANSWER/BUSY, ANSWEREDTIME, DIALEDTIME, DIALEDPEERNUMBER = the owner's
extension the server returned, MIXMONITOR_FILENAME, HANGUPCAUSE), then the hangup handler's
``hangup`` session on the same, now dead, channel.  Every reply is Asterisk's, as
``agi.asterisk_commands.answer`` makes it (200/510/511/520 texts, dead-channel rules), ONE
command answered per socket wake-up as res_agi.c does, and the final ``HANGUP`` line after
the server closes.

Engines: ``lean`` (default) runs the calls as small state machines on non-blocking sockets in
one epoll loop per process, and answers SET/GET VARIABLE lines with ``fast_answer`` (the same
bytes as ``answer()``, without its per-character parser; anything else goes to ``answer()``;
tests/test_bench_smoke.py checks they agree).  ``simulator`` runs ``SimulatedCall`` itself
under gevent: the same bytes, about 4x the generator CPU per call (see --profile-generator).

*AGI answer latency* is what Asterisk waits: from connect until crmagi closes the socket,
for ``incoming`` and for ``hangup``.  Calls are started open-loop at ``--rate`` calls/s for
``--duration`` s (at most ``--concurrency`` calls in flight; a call that finds no free slot
waits and is counted as ``late``), spread over ``--procs`` generator processes.  Errors are
counted by kind with an example: connect failures, timeouts, resets, ``CRM_STATUS=error``
(the server answered without the CRM within its [agi] timeout).  Server CPU seconds come from
/proc/<pid>/stat (utime+stime of every server pid and its children), RSS from /proc/<pid>/status;
MariaDB's CPU is reported too (it runs on the same cores).  With ``--database`` the Call rows
written (crmagi_calls, by linkedid) are counted after the run.

Loopback only; every loop is bounded by --duration and --timeout; it stops by itself.

    # start crmagi serve itself on a generated database (2 server processes, ports 14600-14601):
    python bench/load.py --database crmagi_bench_1a2b3c4d --samples FILE --rate 200 --duration 60
    python bench/load.py --database DB --samples FILE --server-procs 2 --procs 2 --rate 1000 --duration 60
    # an already running server (pass its pid(s) for CPU/RSS):
    python bench/load.py --address 127.0.0.1:4573 --server-pid 1234 --samples FILE --rate 50 --duration 10
    # profile the server under load (cProfile; py-spy when installed: --profile pyspy):
    python bench/load.py --database DB --samples FILE --rate 300 --duration 20 --profile cprofile
"""
import argparse
import cProfile
import errno
import heapq
import io
import json
import os
import pstats
import random
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (children, cpu_seconds, machine_busy_seconds, percentile, pid_of, rss_mb,  # noqa: E402
                    start_server, stop_server)

from agi.asterisk_commands import Channel, answer  # noqa: E402
from agi.protocol import AgiEnv  # noqa: E402
from agi.simulator import DEFAULT_THREADID, MAX_AGI_CONNECT, env_block, take_line  # noqa: E402

DID = "4930123400"
ANONYMOUS = ("", "anonymous", "Unknown")
FALSE = {"no", "false", "off", "n", "f", "0"}


class CallError(Exception):
    def __init__(self, kind, detail=""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


# -- Asterisk's replies, fast -----------------------------------------------------------
# agi.asterisk_commands.answer() parses every line character by character; crmagi's calls
# are ~20 SET/GET VARIABLE lines each.  For those, when the line has the plain shape
# (words and "quoted words" without backslashes), parse_args() is exactly a tokenizer, so
# fast_answer() does the same thing without the per-character loop.  Everything else goes
# to answer() itself.  tests/test_bench_smoke.py checks both agree, on the recorded lines
# and on generated ones.

_PLAIN = re.compile(r'(?:[^ \t"\\]+|"[^"\\]*")(?:[ \t]+(?:[^ \t"\\]+|"[^"\\]*"))*[ \t]*')
_TOKEN = re.compile(r'"([^"]*)"|([^ \t"]+)')


def fast_answer(chan, line, astdb, assigned):
    """Byte for byte what ``answer(chan, line, astdb, assigned)`` returns, with the same effects."""
    if line[:13] in (b"SET VARIABLE ", b"GET VARIABLE ") and line.endswith(b"\n"):
        text = line[:-1].decode("utf-8", "surrogateescape")
        if _PLAIN.fullmatch(text):
            argv = [m.group(1) if m.group(1) is not None else m.group(2) for m in _TOKEN.finditer(text)]
            if line[0] == 83 and len(argv) == 4:       # "S": SET VARIABLE name value
                chan.write(argv[2], argv[3])
                assigned[argv[2]] = argv[3]
                return b"200 result=1\n"
            if line[0] == 71 and len(argv) == 3:       # "G": GET VARIABLE name
                value = chan.read(argv[2])
                if value is None:
                    return b"200 result=0\n"
                return ("200 result=1 (%s)\n" % value).encode("utf-8", "surrogateescape")
    return answer(chan, line, astdb, assigned)


def env_of(env):
    """``agi.protocol.parse_env(env)[0]`` for a block env_block() made (checked in the smoke test)."""
    parsed = AgiEnv()
    for line in env[:-2].decode("utf-8", "replace").split("\n"):
        key, _, value = line.partition(":")
        parsed[key[4:]] = value[1:] if value.startswith(" ") else value
    return parsed


def dial_result(rng, owner_exten):
    """What Dial/MixMonitor leave on the channel for the hangup handler."""
    r = rng.random()
    if r < 0.7:
        talk, ring = rng.randint(5, 300), rng.randint(2, 20)
        return {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": str(talk), "DIALEDTIME": str(talk + ring),
                "DIALEDPEERNUMBER": owner_exten or "104", "HANGUPCAUSE": "16",
                "MIXMONITOR_FILENAME": "/var/spool/asterisk/monitor/in-bench-%d.wav" % rng.randrange(10 ** 9)}
    status = "NOANSWER" if r < 0.9 else "BUSY"
    return {"DIALSTATUS": status, "ANSWEREDTIME": "", "DIALEDTIME": "20" if status == "NOANSWER" else "0",
            "DIALEDPEERNUMBER": owner_exten or "104", "HANGUPCAUSE": "19" if status == "NOANSWER" else "17",
            "MIXMONITOR_FILENAME": "/var/spool/asterisk/monitor/in-bench-%d.wav" % rng.randrange(10 ** 9)}


# -- the lean engine: one epoll loop, every call a small state machine ---------------------

class Call:
    """One call: the incoming session, the Dial results, the hangup session."""
    __slots__ = ("i", "serial", "uniqueid", "address", "caller", "chan", "name", "threadid", "phase",
                 "sock", "fd", "buf", "eof", "out", "connected", "t0", "deadline", "assigned",
                 "first", "status", "astdb")

    def __init__(self, i, serial, uniqueid, address, caller):
        self.i, self.serial, self.uniqueid, self.address, self.caller = i, serial, uniqueid, address, caller
        self.name = "PJSIP/trunk-%08x" % serial
        self.threadid = DEFAULT_THREADID + serial * 512000
        self.chan = Channel(self.name, callerid=caller, calleridname="", linkedid=uniqueid,
                            variables={"CRM_DIRECTION": "Inbound"})
        self.phase, self.sock, self.first, self.status, self.astdb = "incoming", None, None, "", {}


class LeanEngine:
    """Runs calls on non-blocking sockets with epoll (level-triggered), as Asterisk's res_agi
    would see them: the env block, then per socket wake-up ONE command line answered."""

    def __init__(self, cfg, res, callers, rng):
        self.cfg, self.res, self.callers, self.rng = cfg, res, callers, rng
        self.ep = select.epoll()
        self.calls = {}            # fd -> Call
        self.holds = []            # (due, serial, call) waiting for the hangup session
        self.active = 0
        self.timeout = cfg["timeout"]

    def start_call(self, call):
        self.active += 1
        self._open(call, "incoming", "crmagi-inbound", 3, [DID])

    def _open(self, call, script, context, priority, args):
        host, port = call.address
        chan = call.chan
        env = env_block(script, host=host, port=port, channel=call.name, uniqueid=call.uniqueid,
                        callerid=chan.callerid_num, calleridname=chan.callerid_name, context=context,
                        extension="s", priority=priority, dnid=DID, args=args, threadid=call.threadid)
        chan.env, chan.soft_hangup = env_of(env), False
        call.phase, call.assigned = script, {}
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        call.t0 = time.perf_counter()
        call.deadline = call.t0 + self.timeout
        err = sock.connect_ex(call.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return self._fail(call, "connect", os.strerror(err))
        call.sock, call.fd, call.buf, call.eof, call.out, call.connected = sock, sock.fileno(), b"", False, env, False
        self.calls[call.fd] = call
        self.ep.register(call.fd, select.EPOLLOUT)

    def _fail(self, call, kind, detail):
        if call.sock is not None:
            self._close(call)
        self.res["errors"][kind] = self.res["errors"].get(kind, 0) + 1
        self.res["error_examples"].setdefault(kind, detail)
        self.active -= 1

    def _close(self, call):
        try:
            self.ep.unregister(call.fd)
        except (OSError, ValueError):
            pass
        self.calls.pop(call.fd, None)
        call.sock.close()
        call.sock = None

    def _send(self, call, data):
        """Non-blocking send; what does not fit waits for EPOLLOUT (replies are small)."""
        if call.out:
            call.out += data
            return
        try:
            sent = call.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:               # the server is gone; Asterisk ignores it too
            return
        if sent < len(data):
            call.out = data[sent:]
            self.ep.modify(call.fd, select.EPOLLIN | select.EPOLLOUT)

    def on_event(self, fd, events):
        call = self.calls.get(fd)
        if call is None:
            return
        if not call.connected:
            err = call.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self._fail(call, "connect", os.strerror(err))
            call.connected = True
            data, call.out = call.out, b""
            self.ep.modify(fd, select.EPOLLIN)
            self._send(call, data)
            return
        if events & select.EPOLLOUT and call.out:
            data, call.out = call.out, b""
            self.ep.modify(fd, select.EPOLLIN)
            self._send(call, data)
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:                                   # one wake-up of the socket
            data = call.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        call.eof = not data
        call.buf += data
        while True:
            line, call.buf = take_line(call.buf, call.eof)    # at most ONE command per wake-up...
            if line is None:
                break
            self._send(call, fast_answer(call.chan, line, call.astdb, call.assigned))
            if not call.eof:
                break                                          # ...unless the server closed already
        if call.eof:
            self._session_done(call)

    def _end_session(self, call):
        """The server closed: Asterisk's final HANGUP, then the socket closes; the elapsed time."""
        elapsed = time.perf_counter() - call.t0
        if call.chan.vars.get("AGISIGHUP", "").lower() not in FALSE:
            try:
                call.sock.send(b"HANGUP\n")     # Asterisk's final HANGUP after the server closed
            except OSError:
                pass
        self._close(call)
        call.chan.vars["AGISTATUS"] = "SUCCESS"
        return elapsed

    def _session_done(self, call):
        elapsed = self._end_session(call)
        if call.phase == "incoming":
            call.first = elapsed
            call.status = call.assigned.get("CRM_STATUS", "")
            if self.cfg["hold"] > 0:
                heapq.heappush(self.holds, (time.monotonic() + self.cfg["hold"], call.serial, call))
            else:
                self._hangup(call)
        else:
            self.active -= 1
            self._record(call, elapsed)

    def _hangup(self, call):
        chan = call.chan
        dial = dial_result(self.rng, call.assigned.get("CRM_OWNER_EXTEN"))
        chan.cause = dial.pop("HANGUPCAUSE")
        for key, value in dial.items():
            chan.write(key, value)
        chan.dead = True
        self._open(call, "hangup", "crmagi-hangup", 1, [])

    def _record(self, call, second):
        res = self.res
        res["last_end"] = time.time()
        res["completed"] += 1
        res["incoming_ms"].append(call.first * 1000.0)
        res["hangup_ms"].append(second * 1000.0)
        status = call.status or "?"
        res["statuses"][status] = res["statuses"].get(status, 0) + 1
        if status == "error":
            res["errors"]["crm_status_error"] = res["errors"].get("crm_status_error", 0) + 1
            res["error_examples"].setdefault("crm_status_error",
                                             "CRM_STATUS=error: answered without the CRM within [agi] timeout")

    def expire(self, now_perf):
        for call in [c for c in self.calls.values() if c.deadline < now_perf]:
            self._fail(call, "timeout", "%s session: server did not close within %.1fs" % (call.phase, self.timeout))

    def tick(self, next_start, next_expire):
        """Due hangups, expired sessions, then one epoll wait (no later than ``next_start``,
        the monotonic time of the next call to start, if any); returns the next expiry check."""
        while self.holds and self.holds[0][0] <= time.monotonic():
            self._hangup(heapq.heappop(self.holds)[2])
        perf = time.perf_counter()
        if perf >= next_expire:
            self.expire(perf)
            next_expire = perf + 0.05
        wait = 0.05
        if next_start is not None:
            wait = min(wait, max(0.0, next_start - time.monotonic()))
        if self.holds:
            wait = min(wait, max(0.0, self.holds[0][0] - time.monotonic()))
        for fd, events in self.ep.poll(wait):
            self.on_event(fd, events)
        return next_expire

    def run(self, total, mono0, interval, addresses, epoch, index):
        cfg, res = self.cfg, self.res
        limit = max(1, cfg["concurrency"] // cfg["procs"])
        i, next_expire = 0, 0.0
        stop_starting = mono0 + cfg["duration"] + self.timeout
        while True:
            now = time.monotonic()
            while i < total and now >= mono0 + i * interval and self.active < limit:
                if now > stop_starting:
                    total = i
                    break
                lag = now - (mono0 + i * interval)
                res["max_lag_ms"] = max(res["max_lag_ms"], lag * 1000.0)
                serial = index * 10_000_000 + i + 1
                call = Call(i, serial, "%d.%d" % (epoch, serial), addresses[serial % len(addresses)], self.callers[i])
                if res["first_start"] is None:
                    res["first_start"] = time.time()
                res["started"] += 1
                self.start_call(call)
                i += 1
            if i < total and self.active >= limit and now >= mono0 + i * interval:
                res["late"] += 1 if res.get("_late_i") != i else 0
                res["_late_i"] = i
            if i >= total and not self.active:
                break
            next_start = mono0 + i * interval if i < total and self.active < limit else None
            next_expire = self.tick(next_start, next_expire)
        res.pop("_late_i", None)
        self.ep.close()


# -- the simulator engine: agi.simulator.SimulatedCall under gevent --------------------------

def simulator_run(cfg, res, callers, rng, total, mono0, interval, addresses, epoch, index):
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from gevent.pool import Pool
    from agi.simulator import SimulatedCall

    pool = Pool(max(1, cfg["concurrency"] // cfg["procs"]))

    def one(i):
        serial = index * 10_000_000 + i + 1
        if res["first_start"] is None:
            res["first_start"] = time.time()
        call = SimulatedCall(addresses[serial % len(addresses)], "incoming", number=DID, callerid=callers[i],
                             uniqueid="%d.%d" % (epoch, serial))
        try:
            first, second = call.run(dial=dial_result(rng, None), timeout=cfg["timeout"])
            for result in (first, second):
                if result.agistatus == "FAILURE":
                    raise CallError("connect", "refused or no connect within %gs" % MAX_AGI_CONNECT)
                if result.timed_out:
                    raise CallError("timeout", "server did not close within %.1fs" % cfg["timeout"])
        except CallError as exc:
            res["errors"][exc.kind] = res["errors"].get(exc.kind, 0) + 1
            res["error_examples"].setdefault(exc.kind, exc.detail)
            return
        res["last_end"] = time.time()
        res["completed"] += 1
        res["incoming_ms"].append(first.elapsed * 1000.0)
        res["hangup_ms"].append(second.elapsed * 1000.0)
        status = first.variables.get("CRM_STATUS", "") or "?"
        res["statuses"][status] = res["statuses"].get(status, 0) + 1
        if status == "error":
            res["errors"]["crm_status_error"] = res["errors"].get("crm_status_error", 0) + 1
            res["error_examples"].setdefault("crm_status_error", "CRM_STATUS=error")

    for i in range(total):
        lag = time.monotonic() - (mono0 + i * interval)
        if lag < 0:
            gevent.sleep(-lag)
        else:
            res["max_lag_ms"] = max(res["max_lag_ms"], lag * 1000.0)
        if pool.full():
            res["late"] += 1
            pool.wait_available(timeout=cfg["timeout"])
        if time.monotonic() > mono0 + cfg["duration"] + cfg["timeout"]:
            break
        res["started"] += 1
        pool.spawn(one, i)
    pool.join(timeout=cfg["timeout"] * 2 + 1)
    pool.kill(block=True, timeout=1)


# -- the generator process ----------------------------------------------------------

def caller_numbers(samples, count, present_share, anonymous_share, seed):
    rng = random.Random(seed)
    present = [p["caller"] for p in samples.get("present", [])] or ["+4930111111"]
    absent = [a["caller"] for a in samples.get("absent", [])] or ["+4930999999"]
    out = []
    for _ in range(count):
        r = rng.random()
        out.append(rng.choice(ANONYMOUS) if r < anonymous_share else
                   rng.choice(present) if r < anonymous_share + present_share else rng.choice(absent))
    return out


def worker(cfg):
    """One generator process: paced calls, results as a dict (raw latencies in ms)."""
    samples = json.loads(Path(cfg["samples"]).read_text(encoding="utf-8")) if cfg.get("samples") else {}
    index, procs = cfg["index"], cfg["procs"]
    rate = cfg["rate"] / procs
    total = int(round(cfg["duration"] * rate))
    addresses = [tuple(a) for a in cfg["addresses"]]
    callers = caller_numbers(samples, total, cfg["present_share"], cfg["anonymous_share"], cfg["seed"] + index)
    rng = random.Random(cfg["seed"] * 1000 + index)
    res = {"started": 0, "completed": 0, "late": 0, "max_lag_ms": 0.0, "incoming_ms": [], "hangup_ms": [],
           "statuses": {}, "errors": {}, "error_examples": {}, "first_start": None, "last_end": None}
    mono0 = time.monotonic() + (cfg["start_at"] - time.time()) + index / cfg["rate"]
    interval = 1.0 / rate if rate > 0 else 0
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    profiler = cProfile.Profile() if cfg.get("profile_generator") else None
    if profiler:
        profiler.enable()
    if cfg["engine"] == "lean":
        LeanEngine(cfg, res, callers, rng).run(total, mono0, interval, addresses, cfg["epoch"], index)
    else:
        simulator_run(cfg, res, callers, rng, total, mono0, interval, addresses, cfg["epoch"], index)
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        res["generator_profile"] = out.getvalue()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_seconds"] = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return res


# -- the parent: servers, workers, measurements ----------------------------------------

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
    import pymysql

    for attempt in range(10):     # the server's own pools may hold most of max_connections
        try:
            conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=database,
                                   autocommit=True)
            break
        except pymysql.err.OperationalError:
            if attempt == 9:
                raise
            time.sleep(1.0)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*), COALESCE(SUM(outcome IS NOT NULL), 0) FROM crmagi_calls "
                        "WHERE linkedid LIKE %s", ("%d.%%" % epoch,))
            rows, finished = cur.fetchone()
        return int(rows), int(finished)
    finally:
        conn.close()


def _profile_text(path, limit=30):
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def _pyspy_summary(raw_path, limit=30):
    """Self and total sample counts per frame from py-spy's collapsed stacks."""
    own, total, samples = {}, {}, 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        count = int(count)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = ["py-spy: %d samples" % samples, "self%   frame"]
    lines += ["%5.1f%%  %s" % (100.0 * n / max(1, samples), f) for f, n in
              sorted(own.items(), key=lambda kv: -kv[1])[:limit]]
    lines += ["", "total%  frame"]
    lines += ["%5.1f%%  %s" % (100.0 * n / max(1, samples), f) for f, n in
              sorted(total.items(), key=lambda kv: -kv[1])[:limit]]
    return "\n".join(lines)


def run(args):
    servers, workdirs, profiles, pyspies = [], [], [], []
    if args.address:
        addresses = _parse_address(args.address)
        roots = list(args.server_pid or [])
    elif args.database:
        url = "mysql+pymysql://root@127.0.0.1:3306/" + args.database
        region = args.region
        if not region and args.samples:
            region = json.loads(Path(args.samples).read_text(encoding="utf-8")).get("meta", {}).get("region")
        addresses = [("127.0.0.1", args.port + k) for k in range(args.server_procs)]
        profile_dir = Path(tempfile.mkdtemp(prefix="crmagi-profile-")) if args.profile else None
        for k, (_, port) in enumerate(addresses):
            prefix = ()
            if args.profile == "cprofile":
                profiles.append(profile_dir / ("serve-%d.prof" % port))
                prefix = ("-m", "cProfile", "-o", str(profiles[-1]))
            proc, work = start_server(url, port, extra=args.server_config, region=region or "DE", prefix=prefix,
                                      check=(k == 0), agi="workers = %d\n" % args.workers if args.workers > 1 else "")
            servers.append(proc)
            workdirs.append(work)
        roots = [p.pid for p in servers]
        time.sleep(args.warmup + (1.0 if args.workers > 1 else 0.0))        # reflection, users, phonenumbers metadata: _warm_up
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
            spy = shutil.which("py-spy")
            if not spy:
                raise SystemExit("--profile pyspy: py-spy not found (pip install py-spy), or use --profile cprofile")
            for pid in pids:
                raw = Path(tempfile.mkdtemp(prefix="crmagi-pyspy-")) / ("serve-%d.txt" % pid)
                pyspies.append((subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(args.duration) + 1),
                                                  "-r", "200", "--format", "raw", "-o", str(raw)],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw))
        cpu0, db0, busy0 = _cpu(pids), _cpu(mysqld), machine_busy_seconds()
        rss_peak = {"value": 0.0, "stop": threading.Event()}
        sampling = threading.Thread(target=_sample_rss, args=(pids, rss_peak), daemon=True)
        sampling.start()
        procs = []
        for k in range(args.procs):
            cfg = dict(base, index=k, profile_generator=bool(args.profile_generator and k == 0))
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            procs[-1].stdin.write(json.dumps(cfg).encode())
            procs[-1].stdin.close()
        results = []
        for proc in procs:
            out, err = proc.stdout.read(), proc.stderr.read()
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError("load worker failed (%d): %s" % (proc.returncode, err.decode()[-2000:]))
            results.append(json.loads(out))
        wall_end = time.time()
        cpu1, db1, busy1 = _cpu(pids), _cpu(mysqld), machine_busy_seconds()
        rss_peak["stop"].set()
        rss_end = sum(rss_mb(p) for p in pids)
        written = None
        if args.database and not args.address:
            written = _wait_writes(args.database, epoch, sum(r["completed"] for r in results), args.drain)
        cpu2 = _cpu(pids)
        for spy, raw in pyspies:
            spy.wait(args.duration + 30)
    finally:
        for proc in servers:
            stop_server(proc)
    report = aggregate(args, results, addresses, pids, cpu1 - cpu0, cpu2 - cpu0, db1 - db0, rss_end,
                       rss_peak["value"], start_at, wall_end, written)
    # Whatever else ran on the box meanwhile (other test suites, ...): it competed for the cores.
    report["machine_busy_s"] = busy1 - busy0
    report["other_cpu_s"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (db1 - db0) - report["generator_cpu_s"])
    if profiles:
        report["server_profile"] = "\n".join(_profile_text(p, args.profile_lines) for p in profiles if p.exists())
    if pyspies:
        report["server_profile"] = "\n".join(_pyspy_summary(raw, args.profile_lines) for _, raw in pyspies
                                             if raw.exists())
    log_lines = []
    for work in workdirs:
        log = work / "serve.log"
        if log.exists():
            log_lines += [line for line in log.read_text(errors="replace").splitlines()
                          if (" WARNING " in line or " ERROR " in line)
                          and "<no env>" not in line]   # start_server's port probe: connect, close
    report["server_log_warnings"] = len(log_lines)
    report["server_log_examples"] = log_lines[:5]
    for work in workdirs:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _sample_rss(pids, peak):
    while not peak["stop"].is_set():
        peak["value"] = max(peak["value"], sum(rss_mb(p) for p in pids))
        peak["stop"].wait(1.0)


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


def aggregate(args, results, addresses, pids, server_cpu, server_cpu_with_drain, db_cpu, rss_end, rss_peak,
              start_at, wall_end, written):
    incoming = [v for r in results for v in r["incoming_ms"]]
    hangup = [v for r in results for v in r["hangup_ms"]]
    completed = sum(r["completed"] for r in results)
    started = sum(r["started"] for r in results)
    errors, examples, statuses = {}, {}, {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r["error_examples"].items():
            examples.setdefault(k, v)
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    firsts = [r["first_start"] for r in results if r["first_start"]]
    lasts = [r["last_end"] for r in results if r["last_end"]]
    span = (max(lasts) - min(firsts)) if firsts and lasts else float("nan")
    achieved = completed / span if span and span == span and span > 0 else 0.0
    gen_cpu = sum(r["cpu_seconds"] for r in results)

    def stats(values):
        return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
                "p99_ms": percentile(values, 99), "max_ms": max(values) if values else float("nan")}

    report = {
        "target_rate": args.rate, "duration_s": args.duration, "concurrency": args.concurrency,
        "procs": args.procs, "engine": args.engine, "servers": ["%s:%d" % a for a in addresses],
        "server_workers": args.workers if not args.address else None,
        "server_pids": pids, "calls_started": started, "calls_completed": completed,
        "calls_per_s": achieved, "calls_per_min": achieved * 60.0, "span_s": span,
        "late_starts": sum(r["late"] for r in results), "max_start_lag_ms": max(r["max_lag_ms"] for r in results),
        "incoming": stats(incoming), "hangup": stats(hangup), "crm_status": statuses,
        "errors": errors, "error_count": sum(errors.values()), "error_examples": examples,
        "server_cpu_s": server_cpu, "server_cpu_s_incl_drain": server_cpu_with_drain,
        "server_cpu_ms_per_call": 1000.0 * server_cpu_with_drain / completed if completed else None,
        "server_cpu_cores": server_cpu / span if span and span == span and span > 0 else None,
        "server_rss_mb": rss_end, "server_rss_peak_mb": rss_peak, "mariadb_cpu_s": db_cpu,
        "generator_cpu_s": gen_cpu, "generator_cpu_ms_per_call": 1000.0 * gen_cpu / completed if completed else None,
        "calls_written": written,
    }
    profiles = [r.get("generator_profile") for r in results if r.get("generator_profile")]
    if profiles:
        report["generator_profile"] = profiles[0]
    return report


def print_report(report, stream=sys.stdout):
    r = report
    print("load: target %g calls/s for %gs, %d generator proc(s) (%s), server(s) %s%s, pids %s" % (
        r["target_rate"], r["duration_s"], r["procs"], r["engine"], ", ".join(r["servers"]),
        " (%d workers)" % r["server_workers"] if r.get("server_workers", 1) and r["server_workers"] > 1 else "",
        r["server_pids"]), file=stream)
    print("  calls: %d started, %d completed, %.1f calls/s = %.0f calls/min (late starts %d, max lag %.1f ms)" % (
        r["calls_started"], r["calls_completed"], r["calls_per_s"], r["calls_per_min"], r["late_starts"],
        r["max_start_lag_ms"]), file=stream)
    for name in ("incoming", "hangup"):
        s = r[name]
        print("  %-9s answer ms: p50 %.2f  p95 %.2f  p99 %.2f  max %.2f  (n=%d)" % (
            name, s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"], s["n"]), file=stream)
    print("  CRM_STATUS: %s" % ", ".join("%s %d" % kv for kv in sorted(r["crm_status"].items())), file=stream)
    print("  errors: %d %s" % (r["error_count"], "; ".join("%s %d (e.g. %s)" % (k, v, r["error_examples"].get(k, ""))
                                                           for k, v in r["errors"].items())), file=stream)
    per_call = r["server_cpu_ms_per_call"]
    print("  server: CPU %.1f s (%.2f cores, %s ms/call incl. writes), RSS %.0f MB (peak %.0f); MariaDB CPU %.1f s;"
          " generator CPU %.1f s (%s ms/call)" % (
              r["server_cpu_s"], r["server_cpu_cores"] or 0, "%.2f" % per_call if per_call else "-",
              r["server_rss_mb"], r["server_rss_peak_mb"], r["mariadb_cpu_s"], r["generator_cpu_s"],
              "%.2f" % r["generator_cpu_ms_per_call"] if r["generator_cpu_ms_per_call"] else "-"), file=stream)
    if r.get("machine_busy_s") is not None:
        print("  machine: %.1f CPU s busy in all, %.1f s of it by other processes" % (
            r["machine_busy_s"], r["other_cpu_s"]), file=stream)
    if r.get("calls_written"):
        w = r["calls_written"]
        if w.get("error"):
            print("  Call rows: not counted (%s)" % w["error"], file=stream)
        else:
            print("  Call rows: %d written, %d finished, of %d completed calls" % (
                w["rows"], w["finished"], w["completed_calls"]), file=stream)
    if r.get("server_log_warnings"):
        print("  server log: %d warnings/errors, e.g. %s" % (r["server_log_warnings"], r["server_log_examples"][:2]),
              file=stream)


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
    target.add_argument("--server-config", default="", help="extra INI text for the started server(s)")
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
    p.add_argument("--profile", choices=("cprofile", "pyspy"), help="profile the started server(s)")
    p.add_argument("--profile-lines", type=int, default=25)
    p.add_argument("--profile-generator", action="store_true", help="cProfile generator process 0")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.worker:
        cfg = json.loads(sys.stdin.read())
        json.dump(worker(cfg), sys.stdout)
        return
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print_report(report)
    for key in ("server_profile", "generator_profile"):
        if report.get(key):
            print("\n--- %s ---\n%s" % (key, report[key]))


if __name__ == "__main__":
    main()
