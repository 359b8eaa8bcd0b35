"""A simulated Asterisk 22 for FastAGI: the bytes a real Asterisk sends, and when.

The test suite's fake Asterisk (tests/asterisk_replay.py), ``crmagi demo`` and load
generators all run calls through this one implementation.  It was checked byte for
byte against recordings of a real Asterisk 22.10.1 (tests/test_asterisk_replay.py),
including the parts that hurt:

* the environment block in Asterisk's key order, ``unknown`` for an empty caller ID;
* ONE command line read per wake-up of the socket: pipelined commands wait (fixture 10f);
* commands cut at 2047 bytes like res_agi.c's fgets(), the rest runs as the next command;
* an unsolicited ``HANGUP`` line when the caller hangs up, then "dead" answers (511);
* a final ``HANGUP`` after the server closes, even on a live channel;
* no timeout once connected (``timeout`` here only stops the simulator waiting forever).

    call = SimulatedCall(server.address, "incoming", number="4930123400", callerid="+4930111111")
    first, last = call.run(dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "5"})
    first.variables["CRM_OWNER_EXTEN"]      # what the server SET; call.channel.vars holds all of it
"""
import itertools
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from gevent import socket

from agi.fastagi import ended
from agi.demo.asterisk_commands import AGI_BUF_LEN, DEAD_REPLY, Channel, answer, parse_args  # noqa: F401 (API)
from agi.fastagi.protocol import parse_env

VERSION = "22.10.1"
MAX_AGI_CONNECT = 2.0  # res_agi.c MAX_AGI_CONNECT (ms / 1000): then AGISTATUS=FAILURE, the dialplan goes on
DEFAULT_THREADID = 139830812919488
_FALSE = {"no", "false", "off", "n", "f", "0"}


@dataclass
class SessionResult:
    commands: List[bytes] = field(default_factory=list)  # command lines received, in order ("\n" kept)
    replies: List[bytes] = field(default_factory=list)   # every reply sent after the env, HANGUP lines too
    variables: Dict[str, str] = field(default_factory=dict)  # SET VARIABLE / EXEC Set(...) by the server
    server_closed: bool = False                          # the server closed or half-closed first
    timed_out: bool = False                              # ... or not within ``timeout``: the simulator gave up
    pipelined: bool = False                              # a command came before the previous one's reply
    elapsed: float = 0.0
    received: bytes = b""                                # every byte the server sent
    agistatus: str = ""                                  # SUCCESS; HANGUP: hung up during it; FAILURE: no connect


def env_block(script: str, *, host: str = "127.0.0.1", port: int = 4573, channel: str, uniqueid: str,
              callerid: str = "", calleridname: str = "", context: str, extension: str,
              args: Sequence[str] = (), version: str = VERSION, language: str = "en", priority: int = 1,
              callingpres: Optional[int] = None, callingani2: int = 0, callington: int = 0,
              callingtns: int = 0, dnid: str = "", rdnis: str = "", accountcode: str = "",
              threadid: int = DEFAULT_THREADID, enhanced: bool = False) -> bytes:
    """The agi_* block res_agi.c setup_env() sends, in its order, ended by an empty line.

    ``script`` is what follows ``host:port/`` in the AGI() URL, query string included.
    Empty caller ID, name, dnid and rdnis are sent as ``unknown``; ``callingpres``
    defaults to 0, or 67 (number not available) when there is no caller ID at all.
    ``agi_type`` is the channel technology (``PJSIP/trunk-00000001`` -> ``PJSIP``)."""
    if callingpres is None:
        callingpres = 0 if callerid or calleridname else 67
    request = "agi://%s:%d/%s" % ("[%s]" % host if ":" in host else host, port, script)
    values = [("network", "yes"), ("network_script", script), ("request", request),
              ("channel", channel), ("language", language), ("type", channel.split("/", 1)[0]),
              ("uniqueid", uniqueid), ("version", version), ("callerid", callerid or "unknown"),
              ("calleridname", calleridname or "unknown"), ("callingpres", int(callingpres)),
              ("callingani2", int(callingani2)), ("callington", int(callington)), ("callingtns", int(callingtns)),
              ("dnid", dnid or "unknown"), ("rdnis", rdnis or "unknown"), ("context", context),
              ("extension", extension), ("priority", int(priority)), ("enhanced", "1.0" if enhanced else "0.0"),
              ("accountcode", accountcode), ("threadid", int(threadid))]
    values += [("arg_%d" % n, arg) for n, arg in enumerate(args, 1)]
    return "".join("agi_%s: %s\n" % pair for pair in values).encode("utf-8", "surrogateescape") + b"\n"


def run_session(address, env: bytes, chan: Channel, *, astdb: Optional[Dict[Tuple[str, str], str]] = None,
                timeout: float = 5.0, hangup_after: Optional[float] = None) -> SessionResult:
    """One FastAGI session on ``chan`` against the server at ``address``, as run_agi() does it.

    Sends ``env`` (see env_block; set ``chan.env`` to its parsed form), then answers one
    command line per socket wake-up until the server closes.  ``hangup_after``: seconds
    after connect at which the caller hangs up (None or math.inf: never; ignored on a dead
    channel).  ``timeout``: the simulator gives up (``timed_out``); Asterisk would wait
    forever.  ``astdb`` is the AstDB that DATABASE commands use.  Raises OSError when the
    connect fails or takes more than 2 s (Asterisk: AGISTATUS=FAILURE)."""
    astdb = {} if astdb is None else astdb
    result, start, buf, eof, was_dead = SessionResult(), time.monotonic(), b"", False, chan.dead
    hangup_time = None if hangup_after is None or chan.dead else start + hangup_after
    sock = socket.create_connection(address, timeout=min(timeout, MAX_AGI_CONNECT))
    try:
        sock.sendall(env)
        while True:
            now = time.monotonic()
            if not chan.dead and (chan.soft_hangup or (hangup_time is not None and now >= hangup_time)):
                chan.dead, hangup_time = True, None
                _hangup_line(chan, sock, result)
                continue
            if now >= start + timeout:
                result.timed_out = True
                break
            if not eof:  # one wake-up of the socket
                sock.settimeout(min(start + timeout, hangup_time or float("inf")) - now)
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    data = b""
                result.received += data
                eof, buf = not data, buf + data
                result.pipelined = result.pipelined or buf.count(b"\n") > 1
            line, buf = take_line(buf, eof)  # at most ONE command per wake-up
            if line is None:
                if eof:
                    break
                continue
            result.commands.append(line)
            _send(sock, answer(chan, line, astdb, result.variables), result)
        result.server_closed = eof
        if eof:
            _hangup_line(chan, sock, result)
    finally:
        sock.close()
        result.elapsed = time.monotonic() - start
        result.agistatus = "HANGUP" if chan.dead and not was_dead else "SUCCESS"
    return result


def take_line(buf: bytes, eof: bool) -> Tuple[Optional[bytes], bytes]:
    """One command as run_agi()'s fgets() loop reads it: through "\\n", at most 2047 bytes."""
    end = buf.find(b"\n", 0, AGI_BUF_LEN - 1)
    if end >= 0:
        return buf[:end + 1], buf[end + 1:]
    if len(buf) >= AGI_BUF_LEN - 1:
        return buf[:AGI_BUF_LEN - 1], buf[AGI_BUF_LEN - 1:]
    return (buf, b"") if eof and buf else (None, buf)


def _hangup_line(chan: Channel, sock, result: SessionResult) -> None:
    if chan.vars.get("AGISIGHUP", "").lower() not in _FALSE:
        _send(sock, b"HANGUP\n", result)


def _send(sock, data: bytes, result: SessionResult) -> None:
    result.replies.append(data)
    try:
        sock.sendall(data)
    except OSError:  # EPIPE/ECONNRESET: the server is gone; Asterisk ignores it too
        pass


class SimulatedCall:
    """One call through crmagi's dialplan include (extensions/extensions_crmagi.conf.j2).

    ``run()`` does what Asterisk does for it: the ``incoming`` (or ``outgoing``) AGI on a
    fresh channel (CRM_DIRECTION set, ``CHANNEL(linkedid)`` = its uniqueid, ARG1 =
    ``number``), then the Dial's results, then the hangup handler's ``hangup`` AGI on the
    same channel, now dead.  ``AGISTATUS`` is set after each session; a server that is
    down gives FAILURE and the call goes on.  ``astdb`` may be shared between calls."""

    _counter = itertools.count(1)

    def __init__(self, address, direction: str = "incoming", *, number: str, callerid: str = "",
                 calleridname: str = "", channel: Optional[str] = None, uniqueid: Optional[str] = None,
                 variables: Optional[Mapping[str, str]] = None, astdb: Optional[Dict] = None,
                 prefix: str = ""):
        if direction not in ("incoming", "outgoing"):
            raise ValueError("direction is 'incoming' or 'outgoing', not %r" % direction)
        serial = next(self._counter)
        self.address, self.direction, self.number = address, direction, number
        self.prefix = prefix            # "NAME/": the AGI URLs of a tenant's include (agi/tenants)
        self.uniqueid = uniqueid or "%d.%d" % (int(time.time()), serial)
        name = channel or "PJSIP/%s-%08x" % ("trunk" if direction == "incoming" else callerid or "phone", serial)
        # What the include sets before its AGI (extensions/extensions_crmagi.conf.j2).
        direction_var = ({"CRM_DIRECTION": "Inbound", "CRM_DID": number} if direction == "incoming"
                         else {"CRM_DIRECTION": "Outbound", "CRM_DIALED": number})
        self.channel = Channel(name, callerid=callerid, calleridname=calleridname, linkedid=self.uniqueid,
                               variables={**direction_var, **(variables or {})})
        self.astdb = {} if astdb is None else astdb
        self.threadid = DEFAULT_THREADID + serial * 512000

    def run(self, dial: Optional[Mapping[str, str]] = None, *, hangup_args: Sequence[str] = (),
            hangup_after: Optional[float] = None, timeout: float = 5.0) -> List[SessionResult]:
        """Both sessions' results.  ``dial``: what Dial/MixMonitor left on the channel
        (DIALSTATUS, ANSWEREDTIME, DIALEDTIME, DIALEDPEERNUMBER, MIXMONITOR_FILENAME ...;
        HANGUPCAUSE, default "16").  A caller who hangs up during the first AGI
        (``hangup_after``) never reaches Dial: then only HANGUPCAUSE is applied.
        ``hangup_args``: the hangup AGI's arguments, expanded like the dialplan does
        (``"${DIALSTATUS}"``); crmagi's own dialplan passes none."""
        first = self.start(hangup_after=hangup_after, timeout=timeout)
        return [first, self.finish(dial, hangup_args=hangup_args, timeout=timeout)]

    def start(self, *, hangup_after: Optional[float] = None, timeout: float = 5.0) -> SessionResult:
        """Only the first AGI (``incoming``/``outgoing``): the call is now ringing."""
        context = "crmagi-inbound" if self.direction == "incoming" else "crmagi-outbound"
        return self._session(self.direction, context, 3, [self.number], hangup_after, timeout)

    def finish(self, dial: Optional[Mapping[str, str]] = None, *, hangup_args: Sequence[str] = (),
               timeout: float = 5.0) -> SessionResult:
        """What Dial left on the channel, then the hangup handler's AGI."""
        chan, dial = self.channel, dict(dial or {})
        cause = dial.pop("HANGUPCAUSE", "16")
        if not chan.dead:
            for name, value in dial.items():
                chan.write(name, value)
        chan.cause, chan.dead = cause, True
        args = [chan.expand(arg) for arg in hangup_args]
        result = self._session("hangup", "crmagi-hangup", 1, args, None, timeout)
        if chan.vars.get(ended.DONE_VARIABLE) != "done":   # the include's fallback: keep them in AstDB
            self.astdb[(ended.FAMILY, self.uniqueid)] = chan.expand(ended.dialplan_value())
        return result

    def _session(self, script, context, priority, args, hangup_after, timeout) -> SessionResult:
        chan = self.channel
        host, port = self.address[:2]
        env = env_block(self.prefix + script, host=host, port=port, channel=chan.name, uniqueid=self.uniqueid,
                        callerid=chan.callerid_num, calleridname=chan.callerid_name, context=context,
                        extension="s", priority=priority, dnid=self.number, args=args, threadid=self.threadid)
        chan.env, chan.soft_hangup = parse_env(env)[0], False
        try:
            result = run_session(self.address, env, chan, astdb=self.astdb, timeout=timeout,
                                 hangup_after=hangup_after)
        except OSError:  # refused (10b) or no connect within 2 s (10c): the dialplan goes on
            result = SessionResult(agistatus="FAILURE")
        chan.vars["AGISTATUS"] = result.agistatus
        return result
