"""Self-tests of the fake Asterisk (tests/asterisk_replay.py) against the recordings.

A tiny FastAGI server, written here on a plain gevent StreamServer (not crmagi's), sends
exactly the recorded ``S>`` lines one at a time; the fake must send back exactly the
recorded ``A>`` bytes.  That proves the fake answers like the real Asterisk 22 did.
"""
import math
import socket as stdsocket

import gevent
import pytest
from gevent.event import AsyncResult
from gevent.server import StreamServer

from agi.fastagi.protocol import get_full_variable
from asterisk_replay import (AGI_BUF_LEN, DEAD_REPLY, FakeAsterisk, load_agi_transcript, load_scenario,
                             parse_args)
from conftest import ASTERISK

SCENARIOS = sorted(path.name[:-len(".agi.txt")] for path in ASTERISK.glob("*.agi.txt"))
REPLAYABLE = [name for name in SCENARIOS if not name.startswith("10f")]  # 10f: see the pipelining tests


class TinyServer:
    """A FastAGI server on loopback port 0 whose per-connection behaviour is ``script(sock, rfile)``."""

    def __init__(self, script):
        self.script, self.done = script, AsyncResult()
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    def _handle(self, sock, _address):
        sock.settimeout(5)
        try:
            self.done.set(self.script(sock, sock.makefile("rb")))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.done.set_exception(exc)

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(timeout=1)

    @property
    def address(self):
        return self.server.address


def read_env(rfile):
    env = b""
    while not env.endswith(b"\n\n"):
        line = rfile.readline()
        assert line, "EOF inside the env block"
        env += line
    return env


def replay_script(session):
    """Send the recorded S> lines, read one line per recorded A> line, half-close where the responder did."""
    def script(sock, rfile):
        received = b""
        for kind, data in session.lines:
            if kind == "S>":
                sock.sendall(data)
            elif kind == "A>":
                received += rfile.readline()
            elif kind == "#" and data.startswith(b"server half-closes"):
                sock.shutdown(stdsocket.SHUT_WR)
        return received + rfile.read()  # nothing more may come before Asterisk closes
    return script


@pytest.mark.parametrize("name", REPLAYABLE)
def test_fake_answers_every_recorded_command_like_asterisk(name):
    scenario = load_scenario(name)
    fake = FakeAsterisk(scenario)
    for index, session in enumerate(scenario.sessions):
        with TinyServer(replay_script(session)) as server:
            result = fake.run_session(index, server.address)
            received = server.done.get(timeout=5)
        expected = b"".join(data for kind, data in session.lines if kind in ("A>", "A|"))
        assert received == expected, "%s session %d" % (name, index)
        assert result.commands == [exchange.command for exchange in session.exchanges]
        assert result.server_closed and not result.timed_out and not result.pipelined


def test_transcript_parsing_keeps_bytes_comments_and_hangups():
    incoming, hangup = load_agi_transcript(ASTERISK / "10a-agi-caller-hangs-up.agi.txt")
    assert incoming.script == "incoming" and hangup.script == "hangup"
    assert incoming.env.startswith(b"agi_network: yes\n")
    assert incoming.env.endswith(b"agi_arg_1: 4930123400\n\n")
    assert (incoming.hangup_at, incoming.hangup_index, incoming.final_hangup) == (1.001, 0, True)
    assert (hangup.hangup_at, hangup.final_hangup) == (None, True)
    assert b"agi_arg_1: \nagi_arg_2: \nagi_arg_3: 0\nagi_arg_4: \n\n" in hangup.env
    assert "server waits 3.0 s before its first command" in incoming.comments
    assert incoming.exchanges[2].command == b"ANSWER\n" and incoming.exchanges[2].reply == [DEAD_REPLY]
    errors, = load_agi_transcript(ASTERISK / "10e-agi-errors-and-quoting.agi.txt")
    assert [len(e.reply) for e in errors.exchanges[:3]] == [1, 3, 4]  # 510, then multi-line 520s
    pipelined, = load_agi_transcript(ASTERISK / "10f-agi-pipelined-commands.agi.txt")
    assert pipelined.env == b"" and [e.reply for e in pipelined.exchanges][1:] == [[], [], []]
    assert pipelined.exchanges[0].reply == [b"200 result=1\n"] and not pipelined.final_hangup


def test_scenario_model_from_ami():
    scenario = load_scenario("01-inbound-answered")
    incoming, hangup = scenario.sessions
    assert incoming.linkedid == hangup.linkedid == "1795699120.0"
    assert not incoming.dead and hangup.dead and hangup.hangupcause == "16"
    assert hangup.variables["DIALSTATUS"] == "ANSWER" and hangup.variables["ANSWEREDTIME"] == "5"
    assert "DIALSTATUS" not in incoming.variables
    assert "ARGC" not in hangup.variables and "LOCAL(ARGC)" not in hangup.variables  # after HangupHandlerRun
    for name in SCENARIOS:  # what the recording responder SET is not Asterisk's: only Originate's CRM_ vars
        for session in load_scenario(name).sessions:
            crm = {key for key in session.variables if key.startswith("CRM_")}
            assert crm <= ({"CRM_RECORD", "CRM_CLICK2CALL"} if name.startswith("07a") else set()), name
    assert load_scenario("10f").sessions[0].env == incoming.env  # "env block as in 01-inbound-answered"


def test_pipelined_commands_get_one_reply_then_nothing():
    scenario = load_scenario("10f-agi-pipelined-commands")
    commands = [exchange.command for exchange in scenario.sessions[0].exchanges]

    def script(sock, rfile):
        read_env(rfile)
        sock.sendall(b"".join(commands))  # four commands in ONE send, as the recording
        first = rfile.readline()
        sock.settimeout(0.5)
        with pytest.raises(stdsocket.timeout):  # the other three wait in Asterisk's buffer
            sock.recv(100)
        sock.settimeout(5)
        sock.sendall(b"NOOP\n")  # more bytes: Asterisk wakes up and answers the NEXT buffered line
        second = sock.recv(100)
        sock.close()
        return first, second

    with TinyServer(script) as server:
        result = FakeAsterisk(scenario).run_session(0, server.address)
        first, second = server.done.get(timeout=5)
    assert first == b"200 result=1\n"
    assert second == b"200 result=1\n"  # SET VARIABLE B 2's answer, not NOOP's "200 result=0"
    assert result.pipelined and result.server_closed
    assert result.commands[:2] == commands[:2]


def test_one_command_at_a_time_is_not_pipelining():
    def script(sock, rfile):
        read_env(rfile)
        for command in (b"NOOP\n", b"GET VARIABLE CALLERID(num)\n"):
            sock.sendall(command[:4])  # a command may come in pieces
            gevent.sleep(0.01)
            sock.sendall(command[4:])
            rfile.readline()
        sock.shutdown(stdsocket.SHUT_WR)
        return rfile.read()

    with TinyServer(script) as server:
        result = FakeAsterisk(load_scenario("01-inbound-answered")).run_session(0, server.address)
        assert server.done.get(timeout=5) == b"HANGUP\n"
    assert not result.pipelined
    assert result.replies == [b"200 result=0\n", b"200 result=1 (+4930111111)\n", b"HANGUP\n"]


def test_hangup_after_sends_hangup_in_between_replies_then_channel_is_dead():
    def script(sock, rfile):
        read_env(rfile)
        lines = []
        for command in (b"GET VARIABLE CALLERID(num)\n", b"ANSWER\n", b"SET VARIABLE CRM_X 1\n",
                        b'EXEC Playback "beep"\n'):
            sock.sendall(command)
            lines.append(rfile.readline())
            if lines[-1] == b"HANGUP\n":
                lines.append(rfile.readline())
            gevent.sleep(0.3 if command.startswith(b"GET") else 0)
        sock.shutdown(stdsocket.SHUT_WR)
        return lines + [rfile.read()]

    with TinyServer(script) as server:
        result = FakeAsterisk(load_scenario("01-inbound-answered")).run_session(0, server.address,
                                                                                hangup_after=0.15)
        lines = server.done.get(timeout=5)
    assert lines == [b"200 result=1 (+4930111111)\n", b"HANGUP\n", DEAD_REPLY, b"200 result=1\n",
                     b"200 result=-1\n", b"HANGUP\n"]
    assert result.replies == lines
    assert result.variables == {"CRM_X": "1"}


def test_recorded_hangup_is_replayed_unless_disabled():
    scenario = load_scenario("10a-agi-caller-hangs-up")

    def script(sock, rfile):
        read_env(rfile)
        sock.sendall(b"ANSWER\n")
        return rfile.readline()

    with TinyServer(script) as server:  # the server answers at once: before the caller's hangup at 1.001 s
        FakeAsterisk(scenario).run_session(0, server.address, hangup_after=math.inf, timeout=0.5)
        assert server.done.get(timeout=5) == b"200 result=0\n"


def test_dead_channel_and_error_answers():
    scenario = load_scenario("01-inbound-answered")
    commands = [b"ANSWER\n", b"CHANNEL STATUS\n", b"EXEC NoOp x\n", b'EXEC Playback "beep"\n',
                b"EXEC NoSuchApplication\n", b"SET VARIABLE ONLY_NAME\n", b"GET FULL VARIABLE\n",
                b"get full variable ${UNSET}|${CALLERID(name)}|${CDR(billsec)}|${EXTEN}\n",
                b"FOO BAR\n", b"GET\n", b"NOOP\r\n"]

    def script(sock, rfile):
        read_env(rfile)
        replies = []
        for command in commands:
            sock.sendall(command)
            reply = [rfile.readline()]
            while reply[0].startswith(b"520-") and not reply[-1].startswith(b"520 "):
                reply.append(rfile.readline())
            replies.append(b"".join(reply))
        sock.close()
        return replies

    fake = FakeAsterisk(scenario)
    with TinyServer(script) as server:
        fake.run_session(1, server.address)  # the hangup handler: a dead channel
        replies = server.done.get(timeout=5)
    assert replies[:5] == [DEAD_REPLY, DEAD_REPLY, b"200 result=0\n", b"200 result=-1\n", b"200 result=-2\n"]
    assert replies[5] == (b"520-Invalid command syntax.  Proper usage follows:\n"
                          b"Sets a variable to the current channel.\n520 End of proper usage.\n")
    assert replies[6].startswith(b"520-") and replies[6].endswith(b"\n520 End of proper usage.\n")
    assert replies[7] == b"200 result=1 (|Anna \"Annie\" O'Neil|0|s)\n"
    assert replies[8:] == [b"510 Invalid or unknown command\n"] * 3  # "noop\r" is not NOOP


def test_variables_set_in_incoming_are_seen_in_hangup_and_astdb_persists():
    fake = FakeAsterisk(load_scenario("04b-outbound-busy"))

    def ask(*commands):
        def script(sock, rfile):
            read_env(rfile)
            replies = []
            for command in commands:
                sock.sendall(command)
                replies.append(rfile.readline())
            sock.close()
            return replies
        return script

    with TinyServer(ask(b'SET VARIABLE CRM_RECORD "Accounts:x y"\n', b'SET VARIABLE CALLERID(name) "Zoe"\n', b"SET VARIABLE __INHERIT 1\n",
                        b"DATABASE PUT crm k v\n", b"EXEC Set FROM_EXEC=yes\n")) as server:
        result = fake.run_session(0, server.address)
        assert server.done.get(timeout=5) == [b"200 result=1\n"] * 4 + [b"200 result=0\n"]
    assert result.variables == {"CRM_RECORD": "Accounts:x y", "CALLERID(name)": "Zoe", "__INHERIT": "1",
                                "FROM_EXEC": "yes"}
    with TinyServer(ask(b"GET VARIABLE CRM_RECORD\n", b"GET VARIABLE INHERIT\n", b"DATABASE GET crm k\n",
                        b"GET VARIABLE FROM_EXEC\n", b"GET VARIABLE DIALSTATUS\n",
                        b"GET VARIABLE CALLERID(name)\n")) as server:
        fake.run_session(1, server.address)
        assert server.done.get(timeout=5) == [b"200 result=1 (Accounts:x y)\n", b"200 result=1 (1)\n",
                                              b"200 result=1 (v)\n", b"200 result=1 (yes)\n",
                                              b"200 result=1 (BUSY)\n", b"200 result=1 (Zoe)\n"]


def test_junk_env_and_a_server_that_closes_at_once():
    def script(sock, rfile):
        data = sock.recv(100)
        sock.close()
        return data

    with TinyServer(script) as server:
        result = FakeAsterisk(load_scenario("01-inbound-answered")).run_session(
            0, server.address, env_override=b"GET / HTTP/1.0\r\n\r\n")
        assert server.done.get(timeout=5) == b"GET / HTTP/1.0\r\n\r\n"
    assert result.server_closed and result.commands == [] and result.replies == [b"HANGUP\n"]


def test_silent_server_times_out_without_a_hangup():
    def script(sock, rfile):
        read_env(rfile)
        return rfile.read()  # waits for the fake to give up

    with TinyServer(script) as server:
        fake = FakeAsterisk(load_scenario("10d-agi-slow-server"))
        result = fake.run_session(0, server.address, timeout=0.3)
        assert server.done.get(timeout=5) == b""
    assert result.timed_out and not result.server_closed and result.replies == []
    assert 0.3 <= result.elapsed < 2


def test_overlong_command_is_cut_at_2047_bytes_like_fgets():
    long_value = b"a" * 3000

    def script(sock, rfile):
        read_env(rfile)
        sock.sendall(b"SET VARIABLE X " + long_value + b"\n")
        first = rfile.readline()
        sock.sendall(b"NOOP\n")  # wakes Asterisk up: it now runs the cut-off rest, "aaa...a"
        second = rfile.readline()
        sock.close()
        return first, second

    with TinyServer(script) as server:
        result = FakeAsterisk(load_scenario("01-inbound-answered")).run_session(0, server.address)
        assert server.done.get(timeout=5) == (b"200 result=1\n", b"510 Invalid or unknown command\n")
    assert len(result.commands[0]) == AGI_BUF_LEN - 1 and len(result.variables["X"]) == AGI_BUF_LEN - 1 - 15


@pytest.mark.parametrize("line, argv", [
    ('SET VARIABLE CALLERID(name) "Anna \\"Annie\\" O\'Neil"', ["SET", "VARIABLE", "CALLERID(name)",
                                                               'Anna "Annie" O\'Neil']),
    ('SET VARIABLE CRM_Q "say \\"hi\\" to O\'Neil; \\\\ backslash"',
     ["SET", "VARIABLE", "CRM_Q", 'say "hi" to O\'Neil; \\ backslash']),
    ('SET VARIABLE CRM_EMPTY ""', ["SET", "VARIABLE", "CRM_EMPTY", ""]),
    ("SET VARIABLE CRM_SPACE two words", ["SET", "VARIABLE", "CRM_SPACE", "two", "words"]),
    ('EXEC NoOp "hello, world"', ["EXEC", "NoOp", "hello, world"]),
    ('a"b c"d  \\ e\t\\\\', ["ab cd", " e", "\\"]),
])
def test_parse_args_like_res_agi(line, argv):
    assert parse_args(line) == argv


def test_unquoted_expression_with_a_space_is_split_like_asterisk_does():
    def script(sock, rfile):
        read_env(rfile)
        replies = []
        for command in (b"GET FULL VARIABLE ${CALLERID(num)} ${EXTEN}\n",  # 5th word: a channel name
                        get_full_variable("${CALLERID(num)} ${EXTEN}")):
            sock.sendall(command)
            replies.append(rfile.readline())
        sock.close()
        return replies

    with TinyServer(script) as server:
        FakeAsterisk(load_scenario("01-inbound-answered")).run_session(0, server.address)
        assert server.done.get(timeout=5) == [b"200 result=0\n", b"200 result=1 (+4930111111 4930123400)\n"]
