"""The load generator's Asterisk: FastAGI sessions as res_agi.c drives them, many at once.

Every call is what crmagi's dialplan include makes Asterisk do (agi/demo/simulator.py SimulatedCall):
the ``incoming`` FastAGI session on a fresh channel (env block from ``agi.demo.simulator.env_block``,
byte for byte Asterisk 22's), then Dial's results are set on the channel (DIALSTATUS
ANSWER/NOANSWER/BUSY, ANSWEREDTIME, DIALEDTIME, DIALEDPEERNUMBER = the owner's extension the
server returned, MIXMONITOR_FILENAME, HANGUPCAUSE), then the hangup handler's ``hangup``
session on the same, now dead, channel.  Every reply is Asterisk's, as
``agi.demo.asterisk_commands.answer`` makes it (200/510/511/520 texts, dead-channel rules), ONE
command answered per socket wake-up as res_agi.c does, and the final ``HANGUP`` line after
the server closes.

``LeanEngine`` runs the calls as small state machines on non-blocking sockets in one epoll
loop, and answers SET/GET VARIABLE lines with ``fast_answer`` (the same bytes as
``answer()``, without its per-character parser; anything else goes to ``answer()``;
tests/test_bench_smoke.py checks they agree).  bench/faults_calls.py drives its campaign on it.
"""
import errno
import heapq
import os
import re
import select
import socket
import time

from agi.demo.asterisk_commands import Channel, answer, set_variable
from agi.fastagi.protocol import AgiEnv
from agi.demo.simulator import DEFAULT_THREADID, env_block, take_line

DID = "4930123400"
FALSE = {"no", "false", "off", "n", "f", "0"}


def serial_of(index, i):
    """The serial of call ``i`` of generator process ``index`` (its linkedid: "<epoch>.<serial>")."""
    return index * 10_000_000 + i + 1


# -- Asterisk's replies, fast -----------------------------------------------------------
# agi.demo.asterisk_commands.answer() parses every line character by character; crmagi's calls
# are SET/GET VARIABLE lines.  For those, when the line has the plain shape
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
            if line[0] == 83 and len(argv) == 4:       # "S": SET VARIABLE name value (or ARRAY(...))
                set_variable(chan, argv[2], argv[3], assigned)
                return b"200 result=1\n"
            if line[0] == 71 and len(argv) == 3:       # "G": GET VARIABLE name
                value = chan.read(argv[2])
                if value is None:
                    return b"200 result=0\n"
                return ("200 result=1 (%s)\n" % value).encode("utf-8", "surrogateescape")
    return answer(chan, line, astdb, assigned)


def env_of(env):
    """``agi.fastagi.protocol.parse_env(env)[0]`` for a block env_block() made (checked in the smoke test)."""
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
                serial = serial_of(index, i)
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
