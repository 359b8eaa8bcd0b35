"""The test suite's fake Asterisk: replays the FastAGI recordings in shared/fixtures/asterisk.

What is about recordings lives here: the lossless transcript format (``A>``/``S>``
lines), the channel model derived from each scenario's AMI stream (variables,
linkedid, deadness as they stood when a recorded session ran) and ``FakeAsterisk``,
which replays a recorded session's env and channel through agi/demo/simulator.py.  How
Asterisk answers (one command per socket wake-up, unsolicited and final ``HANGUP``,
511 on a dead channel, 2047-byte lines) is agi/demo/simulator.py's, shared with the product.

    fake = FakeAsterisk(load_scenario("01-inbound-answered"))
    result = fake.run_session(0, server.address)    # incoming; then 1: the hangup handler, same Channel
    assert result.variables["CRM_OWNER_EXTEN"] == "101" and not result.pipelined
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from agi.fastagi.protocol import AgiEnv, parse_env, reply_is_complete
from agi.demo.simulator import (AGI_BUF_LEN, DEAD_REPLY, Channel, SessionResult, parse_args,  # noqa: F401 (re-exported)
                           run_session)
from conftest import ASTERISK  # the fixtures directory (conftest also monkey-patches first)

_SESSION = re.compile(rb"^# ===== FastAGI session \d+ of \d+: (.*)$")
_TIMING = re.compile(rb"^# \+(\d+(?:\.\d+)?)s")
_ENV_REF = re.compile(r"env block as in (\S+)")


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


class FakeAsterisk:
    """Replays a Scenario's sessions through agi/demo/simulator.py, channels modelled on the recording."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.channels: Dict[str, Channel] = {}
        self.astdb: Dict[Tuple[str, str], str] = {}
        self._applied: Dict[str, Dict[str, str]] = {}  # per channel: the recorded variables entered last

    def channel(self, index: int) -> Channel:
        name = self.scenario.sessions[index].agi_env.get("channel", "")
        return self.channels.setdefault(name, Channel(name))

    def run_session(self, index, address, *, timeout=5.0, hangup_after=None, env_override=None) -> SessionResult:
        """Run recorded session ``index`` against the server at ``address``.

        ``hangup_after``: seconds after connect at which the caller hangs up (unsolicited
        ``HANGUP``); None replays the recording (10a: 1.001 s, else never); math.inf: never.
        ``env_override``: raw bytes to send instead of the recorded env block (junk tests)."""
        session = self.scenario.sessions[index]
        chan = self.channel(index)
        self._enter(chan, session)
        return run_session(address, session.env if env_override is None else env_override, chan,
                           astdb=self.astdb, timeout=timeout,
                           hangup_after=session.hangup_at if hangup_after is None else hangup_after)

    def _enter(self, chan: Channel, session: RecordedSession) -> None:
        """Bring the channel to where the recording had it when ``session`` started."""
        applied = self._applied.get(chan.name, {})
        for key, value in session.variables.items():  # keeps what earlier sessions SET meanwhile
            if applied.get(key) != value:
                chan.vars[key] = value
        self._applied[chan.name], first, chan.env = dict(session.variables), not chan.env, session.agi_env
        if first:  # later sessions keep what the server SET: CALLERID(name) set in incoming, read in hangup
            placeholder = lambda value: "" if value == "unknown" else value  # noqa: E731
            chan.callerid_num = placeholder(chan.env.get("callerid", ""))
            chan.callerid_name = placeholder(chan.env.get("calleridname", ""))
        chan.linkedid, chan.cause, chan.state = session.linkedid, session.hangupcause, session.state
        chan.dead, chan.soft_hangup = session.dead, False
