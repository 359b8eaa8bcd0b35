"""The test suite's fake Asterisk: replays the FastAGI recordings in shared/fixtures/asterisk.

It answers the way Asterisk 22's res/res_agi.c does (parse_args, find_command,
agi_handle_command, run_agi), including the parts that hurt: it reads ONE command
line per wake-up of its socket (surprise 14: pipelined commands wait), sends an
unsolicited ``HANGUP`` when the caller hangs up, answers 511 on a dead channel, and
sends a final ``HANGUP`` after the server closes.  Channel variables come from the
scenario's AMI stream, as they stood when each recorded session ran.

    fake = FakeAsterisk(load_scenario("01-inbound-answered"))
    result = fake.run_session(0, server.address)    # incoming; then 1: the hangup handler, same Channel
    assert result.variables["CRM_OWNER_EXTEN"] == "101" and not result.pipelined
"""
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from gevent import socket

from agi.protocol import AgiEnv, parse_env, reply_is_complete
from conftest import ASTERISK  # the fixtures directory (conftest also monkey-patches first)

AGI_BUF_LEN = 2048  # res_agi.c: fgets() takes at most 2047 bytes; the rest is the next "command"
MAX_ARGS = 128
DEAD_REPLY = b"511 Command Not Permitted on a dead channel or intercept routine\n"
_SESSION = re.compile(rb"^# ===== FastAGI session \d+ of \d+: (.*)$")
_TIMING = re.compile(rb"^# \+(\d+(?:\.\d+)?)s")
_ENV_REF = re.compile(r"env block as in (\S+)")
_FALSE = {"no", "false", "off", "n", "f", "0"}

_COMMANDS = [tuple(name.split()) for name in (
    "answer|asyncagi break|channel status|control stream file|database del|database deltree|database get|"
    "database put|exec|get data|get full variable|get option|get variable|gosub|hangup|noop|receive char|"
    "receive text|record file|say alpha|say digits|say number|say phonetic|say date|say time|say datetime|"
    "send image|send text|set autohangup|set callerid|set context|set extension|set music|set priority|"
    "set variable|stream file|tdd mode|verbose|wait for digit").split("|")]  # (speech * left out)
_DEAD_OK = {"asyncagi break", "database del", "database deltree", "database get", "database put", "exec",
            "get full variable", "get variable", "noop", "set variable", "verbose"}
_USAGE = {  # recorded in 10e; other commands' usage texts were not recorded and get a placeholder
    "set variable": "Sets a variable to the current channel.\n",
    "get variable": "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. "
                    "Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set and "
                    "returns the variable in parentheses.\nExample return code: 200 result=1 (testvariable)\n"}
_CHECKED = {"set variable", "get variable", "get full variable", "exec", "database put", "database get",
            "database del", "verbose", "channel status", "hangup"}  # wrong argc: 520 usage
_APPS_DEAD_OK = {"noop", "set", "verbose", "log", "userevent", "system"}
_APPS = _APPS_DEAD_OK | {"answer", "hangup", "playback", "background", "wait", "dial", "queue", "read",
                         "mixmonitor", "stopmixmonitor", "goto", "gosub", "ringing", "progress", "busy"}


@dataclass
class Exchange:
    command: bytes                                     # one S> line with its "\n"
    reply: List[bytes] = field(default_factory=list)   # its A> lines; [] when never answered (10f)


@dataclass
class RecordedSession:
    script: str                                        # agi_network_script, query string included
    env: bytes = b""                                   # the A> env lines up to and including the empty line
    exchanges: List[Exchange] = field(default_factory=list)
    lines: List[Tuple[str, bytes]] = field(default_factory=list)  # ("A>"|"S>"|"A|"|"#", bytes) in order
    comments: List[str] = field(default_factory=list)
    hangup_at: Optional[float] = None                  # unsolicited HANGUP: seconds after accept
    hangup_index: Optional[int] = None                 # ... after this many commands had been sent
    final_hangup: bool = False                         # the HANGUP Asterisk sent after the server closed
    # from the AMI stream (load_scenario): the channel as it stood when this session started
    variables: Dict[str, str] = field(default_factory=dict)
    linkedid: str = ""
    hangupcause: str = "0"
    state: int = 4                                     # ChannelState (4 Ring, 6 Up)
    dead: bool = False                                 # ran in a hangup handler

    @property
    def agi_env(self) -> AgiEnv:
        return parse_env(self.env)[0] if self.env else AgiEnv()


@dataclass
class Scenario:
    name: str
    sessions: List[RecordedSession]
    ami: List[Dict[str, str]]                          # AMI messages (first value of each key)


def load_agi_transcript(path) -> List[RecordedSession]:
    """Parse the lossless ``A>``/``S>``/``A|``/``#`` transcript format of NN-name.agi.txt."""
    sessions, cur = [], None
    for raw in Path(path).read_bytes().split(b"\n")[:-1]:
        match = _SESSION.match(raw)
        if match:
            cur = RecordedSession(match.group(1).decode())
            sessions.append(cur)
            pending, in_env, when, hangups = [], True, None, []
        if cur is None or not raw:
            continue
        kind, data = raw[:2].decode(), raw[3:] + (b"" if raw.startswith(b"A|") else b"\n")
        if raw.startswith(b"#"):
            kind = "#"
            data = raw[2:]
            cur.comments.append(data.decode("utf-8", "surrogateescape"))
            timing = _TIMING.match(raw)
            when = float(timing.group(1)) if timing else when
        elif kind not in ("A>", "S>", "A|"):
            raise ValueError("%s: not a transcript line: %r" % (path, raw[:40]))
        cur.lines.append((kind, data))
        if kind == "A>" and in_env:
            cur.env += data
            in_env = data != b"\n"
        elif kind == "S>":
            in_env = False
            cur.exchanges.append(Exchange(data))
            pending.append(cur.exchanges[-1])
        elif data == b"HANGUP\n":
            hangups.append((len(cur.exchanges), when))
            # the last line of all, after every command: the HANGUP sent after the server closed
            cur.final_hangup = True
            cur.hangup_index, cur.hangup_at = hangups[0] if len(hangups) > 1 else (None, None)
        elif kind != "#":
            if not pending:
                raise ValueError("%s: reply without a command: %r" % (path, data))
            pending[0].reply.append(data)
            if reply_is_complete([line.decode("utf-8", "surrogateescape") for line in pending[0].reply]):
                pending.pop(0)
        if kind != "#" and data != b"HANGUP\n" and not in_env and cur.final_hangup:
            cur.final_hangup = False  # protocol data after a HANGUP: that one was unsolicited
            cur.hangup_index, cur.hangup_at = hangups[0]
    return sessions


def _read_ami(path: Path) -> List[Dict[str, str]]:
    """Messages split on "\\r\\n\\r\\n"; ``Key: Value`` headers, the first of a repeated key kept."""
    messages = []
    for block in path.read_bytes().decode("utf-8", "surrogateescape").split("\r\n\r\n"):
        pairs = [line.split(": ", 1) for line in block.split("\r\n") if ": " in line]
        messages.append(dict(reversed(pairs)))
    return [message for message in messages if message]


def _model_from_ami(sessions: List[RecordedSession], messages: List[Dict[str, str]]) -> None:
    """Variables, linkedid, state and deadness of each session's channel, from the AMI events.

    VarSets caused by an AGI command (between AGIExecStart and AGIExecEnd on the channel)
    were the recording responder's doing, not Asterisk's, and are left out; so are those
    after HangupHandlerRun (the Gosub's LOCAL(ARGC) ...)."""
    variables, linkedid, causes, starts, executing, handled = {}, {}, {}, {}, set(), set()
    for msg in messages:
        uid, event = msg.get("Uniqueid"), msg.get("Event")
        if not uid or not event:
            continue
        linkedid[uid] = msg.get("Linkedid", linkedid.get(uid, ""))
        chan_vars = variables.setdefault(uid, {})
        if event == "AGIExecStart":
            executing.add(uid)
        elif event == "AGIExecEnd":
            executing.discard(uid)
        elif event == "VarSet" and uid not in executing and uid not in handled:
            chan_vars[msg["Variable"].lstrip("_")] = msg.get("Value", "")
        elif event == "HangupHandlerRun":
            handled.add(uid)
        elif event == "Hangup":
            causes[uid] = msg.get("Cause", "0")
        elif event == "Newexten" and msg.get("Application") == "AGI":
            starts.setdefault(uid, []).append(dict(
                variables=dict(chan_vars), linkedid=linkedid[uid], state=int(msg.get("ChannelState", 4)),
                dead=uid in handled))
    for session in sessions:
        uid = session.agi_env.get("uniqueid", "")
        queue = starts.get(uid, [])
        fallback = dict(variables=dict(variables.get(uid, {})), linkedid=linkedid.get(uid, uid), state=4,
                        dead=session.agi_env.script == "hangup")
        for key, value in (queue.pop(0) if queue else fallback).items():
            setattr(session, key, value)
        session.hangupcause = causes.get(uid, "0")


def load_scenario(name: str, directory=ASTERISK) -> Scenario:
    """``load_scenario("01-inbound-answered")`` (a unique prefix such as "10e" works too)."""
    directory = Path(directory)
    path = directory / (name + ".agi.txt")
    if not path.exists():
        found = sorted(directory.glob(name + "*.agi.txt"))
        if len(found) != 1:
            raise FileNotFoundError("no single AGI transcript for %r in %s: %s" % (name, directory, found))
        path = found[0]
    stem = path.name[:-len(".agi.txt")]
    sessions = load_agi_transcript(path)
    ami_path = directory / (stem + ".ami.txt")
    messages = _read_ami(ami_path) if ami_path.exists() else []
    for session in sessions:  # 10f: "(env block as in 01-inbound-answered, omitted here)"
        refs = [m.group(1) for m in map(_ENV_REF.search, session.comments) if m]
        if not session.env and refs:
            ref = load_scenario(refs[0].rstrip(",."), directory).sessions[0]
            session.env = ref.env
    _model_from_ami(sessions, messages)
    return Scenario(stem, sessions, messages)


def parse_args(line: str) -> List[str]:
    """res_agi.c parse_args(): spaces/tabs split, double quotes group, a backslash escapes the next char."""
    args, quoted, escaped, whitespace = [], False, False, True
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                args.append("")
                whitespace = False
        elif char in " \t" and not quoted and not escaped:
            whitespace = True
        elif char == "\\" and not escaped:
            escaped = True
        else:
            if whitespace:
                if len(args) >= MAX_ARGS - 1:
                    continue  # "Too many arguments, truncating"
                args.append("")
                whitespace = False
            args[-1] += char
            escaped = False
    return args


def _find_command(argv: List[str]) -> Optional[str]:
    words = tuple(word.lower() for word in argv)
    for command in _COMMANDS:
        if words[:len(command)] == command:
            return " ".join(command)
    return None


def _take_line(buf: bytes, eof: bool) -> Tuple[Optional[bytes], bytes]:
    """One command as run_agi()'s fgets() loop reads it: through "\\n", at most 2047 bytes."""
    end = buf.find(b"\n", 0, AGI_BUF_LEN - 1)
    if end >= 0:
        return buf[:end + 1], buf[end + 1:]
    if len(buf) >= AGI_BUF_LEN - 1:
        return buf[:AGI_BUF_LEN - 1], buf[AGI_BUF_LEN - 1:]
    return (buf, b"") if eof and buf else (None, buf)


class Channel:
    """One channel as AGI sees it, shared by every session on the same agi_channel."""

    def __init__(self, name: str):
        self.name, self.vars, self.functions, self._applied = name, {}, {}, {}
        self.env, self.callerid_num, self.callerid_name = AgiEnv(), "", ""
        self.linkedid, self.cause, self.state, self.dead, self.soft_hangup = "", "0", 4, False, False

    def enter(self, session: RecordedSession) -> None:
        """Bring the channel to where the recording had it when ``session`` started."""
        for key, value in session.variables.items():  # keeps what earlier sessions SET meanwhile
            if self._applied.get(key) != value:
                self.vars[key] = value
        self._applied, first, self.env = dict(session.variables), not self.env, session.agi_env
        if first:  # later sessions keep what the server SET: CALLERID(name) set in incoming, read in hangup
            placeholder = lambda value: "" if value == "unknown" else value  # noqa: E731
            self.callerid_num = placeholder(self.env.get("callerid", ""))
            self.callerid_name = placeholder(self.env.get("calleridname", ""))
        self.linkedid, self.cause, self.state = session.linkedid, session.hangupcause, session.state
        self.dead, self.soft_hangup = session.dead, False

    def read(self, name: str) -> Optional[str]:
        """GET VARIABLE: a function when the name ends in ")", else a builtin, else a channel variable."""
        if name.endswith(")") and "(" in name:
            func, _, arg = name[:-1].partition("(")
            key, arg = func.upper() + "(" + arg + ")", arg.strip().lower()
            if func.upper() == "CALLERID":
                return {"num": self.callerid_num, "number": self.callerid_num, "name": self.callerid_name,
                        "all": '"%s" <%s>' % (self.callerid_name, self.callerid_num)}.get(arg)
            if func.upper() == "CHANNEL":
                return {"linkedid": self.linkedid, "uniqueid": self.env.get("uniqueid"),
                        "name": self.name}.get(arg)
            if key in self.functions or func.upper() != "CDR":
                return self.functions.get(key)
            return "0" if arg in ("billsec", "duration") else ""  # CDR(billsec) is 0 in a hangup handler
        builtin = {"EXTEN": "extension", "CONTEXT": "context", "PRIORITY": "priority", "CHANNEL": "channel",
                   "UNIQUEID": "uniqueid", "CALLINGPRES": "callingpres", "CALLINGANI2": "callingani2",
                   "CALLINGTON": "callington", "CALLINGTNS": "callingtns"}.get(name)
        if builtin:
            return self.env.get(builtin)
        if name == "HANGUPCAUSE":
            return self.cause if self.dead else "0"
        return self.vars.get(name)

    def write(self, name: str, value: str) -> None:
        if name.endswith(")") and "(" in name:
            func, _, arg = name[:-1].partition("(")
            if func.upper() == "CALLERID" and arg.lower() in ("num", "number", "name"):
                setattr(self, "callerid_name" if arg.lower() == "name" else "callerid_num", value)
            else:
                self.functions[func.upper() + "(" + arg + ")"] = value
        else:
            self.vars[name.lstrip("_")] = value

    def expand(self, text: str) -> str:
        """GET FULL VARIABLE: substitute ``${NAME}`` and ``${FUNC(arg)}`` (nested too); unknown -> ""."""
        out, i = [], 0
        while i < len(text):
            if not text.startswith("${", i):
                out.append(text[i])
                i += 1
                continue
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += 1 if text.startswith("${", j) else -1 if text[j] == "}" else 0
                j += 2 if text.startswith("${", j) else 1
            if depth:
                return "".join(out) + text[i:]
            out.append(self.read(self.expand(text[i + 2:j - 1])) or "")
            i = j
        return "".join(out)


@dataclass
class SessionResult:
    commands: List[bytes] = field(default_factory=list)  # command lines received, in order ("\n" kept)
    replies: List[bytes] = field(default_factory=list)   # every reply sent after the env, HANGUP lines too
    variables: Dict[str, str] = field(default_factory=dict)  # SET VARIABLE / EXEC Set(...) by the server
    server_closed: bool = False                          # the server closed or half-closed first
    timed_out: bool = False                              # ... or not within ``timeout``: the fake gave up
    pipelined: bool = False                              # a command came before the previous one's reply
    elapsed: float = 0.0
    received: bytes = b""                                # every byte the server sent


class FakeAsterisk:
    """Connects to a FastAGI server the way Asterisk does and answers like the recorded Asterisk."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.channels: Dict[str, Channel] = {}
        self.astdb: Dict[Tuple[str, str], str] = {}

    def channel(self, index: int) -> Channel:
        name = self.scenario.sessions[index].agi_env.get("channel", "")
        return self.channels.setdefault(name, Channel(name))

    def run_session(self, index, address, *, timeout=5.0, hangup_after=None, env_override=None):
        """Run recorded session ``index`` against the server at ``address``.

        ``hangup_after``: seconds after connect at which the caller hangs up (unsolicited
        ``HANGUP``); None replays the recording (10a: 1.001 s, else never); math.inf: never.
        ``env_override``: raw bytes to send instead of the recorded env block (junk tests)."""
        session = self.scenario.sessions[index]
        chan = self.channel(index)
        chan.enter(session)
        hangup_after = session.hangup_at if hangup_after is None else hangup_after
        result, start, buf, eof = SessionResult(), time.monotonic(), b"", False
        hangup_time = None if hangup_after is None or chan.dead else start + hangup_after
        sock = socket.create_connection(address, timeout=timeout)
        try:
            sock.sendall(session.env if env_override is None else env_override)
            while True:
                now = time.monotonic()
                if not chan.dead and (chan.soft_hangup or (hangup_time is not None and now >= hangup_time)):
                    chan.dead, hangup_time = True, None
                    self._hangup_line(chan, sock, result)
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
                line, buf = _take_line(buf, eof)  # at most ONE command per wake-up
                if line is None:
                    if eof:
                        break
                    continue
                result.commands.append(line)
                self._send(sock, self._answer(chan, line, result), result)
            result.server_closed = eof
            if eof:
                self._hangup_line(chan, sock, result)
        finally:
            sock.close()
            result.elapsed = time.monotonic() - start
        return result

    def _hangup_line(self, chan, sock, result):
        if chan.vars.get("AGISIGHUP", "").lower() not in _FALSE:
            self._send(sock, b"HANGUP\n", result)

    @staticmethod
    def _send(sock, data: bytes, result: SessionResult) -> None:
        result.replies.append(data)
        try:
            sock.sendall(data)
        except OSError:  # EPIPE/ECONNRESET: the server is gone; Asterisk ignores it too
            pass

    def _answer(self, chan: Channel, line: bytes, result: SessionResult) -> bytes:
        text = line.decode("utf-8", "surrogateescape")
        argv = parse_args(text[:-1] if text.endswith("\n") else text)  # only "\n" is stripped, not "\r"
        name = _find_command(argv)
        if name is None:
            return b"510 Invalid or unknown command\n"
        if chan.dead and name not in _DEAD_OK:
            return DEAD_REPLY
        reply = self._run(name, chan, argv, result)
        if reply is None:
            usage = _USAGE.get(name, "(usage of %s: not recorded)\n" % name.upper())
            reply = "520-Invalid command syntax.  Proper usage follows:\n%s520 End of proper usage.\n" % usage
        return reply.encode("utf-8", "surrogateescape")

    def _run(self, name: str, chan: Channel, argv: List[str], result: SessionResult) -> Optional[str]:
        """One command's reply, or None for a 520 usage reply (the argc checks of res_agi.c)."""
        argc, key = len(argv), tuple(argv[2:4])
        if name == "set variable" and argc == 4:
            chan.write(argv[2], argv[3])
            result.variables[argv[2]] = argv[3]
            return "200 result=1\n"
        if name == "get variable" and argc == 3:
            return _value(chan.read(argv[2]))
        if name == "get full variable" and argc in (4, 5):  # argv[4]: another channel's name
            return _value(chan.expand(argv[3]) if argc == 4 or argv[4] == chan.name else None)
        if name == "exec" and argc >= 2:
            return "200 result=%d\n" % self._exec(chan, argv[1].lower(), argv[2] if argc > 2 else "", result)
        if name == "database put" and argc == 5:
            self.astdb[key] = argv[4]
            return "200 result=1\n"
        if name == "database get" and argc == 4:
            return _value(self.astdb.get(key))
        if name == "database del" and argc == 4:
            return "200 result=%d\n" % (self.astdb.pop(key, None) is not None)
        if name == "verbose" and argc >= 2:
            return "200 result=1\n"
        if name == "answer":
            chan.state = 6
        if name in ("channel status", "hangup") and argc <= len(name.split()) + 1:
            if argc == len(name.split()) + 1 and argv[-1] != chan.name:
                return "200 result=-1\n"  # no such channel
            chan.soft_hangup = name == "hangup"
            return "200 result=1\n" if chan.soft_hangup else "200 result=%d\n" % chan.state
        return None if name in _CHECKED else "200 result=0\n"  # noop, answer, what a CRM never uses

    @staticmethod
    def _exec(chan: Channel, app: str, options: str, result: SessionResult) -> int:
        if app not in _APPS:
            return -2
        if app == "set" and "=" in options:
            var, _, value = options.partition("=")
            chan.write(var, value)
            result.variables[var] = value
        chan.soft_hangup = chan.soft_hangup or app == "hangup"
        return 0 if app in _APPS_DEAD_OK or not (chan.dead or chan.soft_hangup) else -1


def _value(value: Optional[str]) -> str:
    return "200 result=0\n" if value is None else "200 result=1 (%s)\n" % value
