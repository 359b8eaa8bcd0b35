"""agi/demo/simulator.py: env blocks byte-exact against the recordings, and whole simulated calls.

(How the simulator answers commands is proven against the recordings in test_asterisk_replay.py.)
"""
import socket as stdsocket

import pytest
from gevent.pool import Pool
from gevent.server import StreamServer

from agi.fastagi.protocol import parse_env, set_variable
from agi.demo.simulator import DEAD_REPLY, SimulatedCall, env_block
from asterisk_replay import load_agi_transcript
from conftest import ASTERISK

RECORDED = [(path.name, index, session) for path in sorted(ASTERISK.glob("*.agi.txt"))
            for index, session in enumerate(load_agi_transcript(path)) if session.env]


def test_env_block_of_01_incoming_is_byte_exact():
    recorded = load_agi_transcript(ASTERISK / "01-inbound-answered.agi.txt")[0].env
    assert env_block("incoming", host="127.0.0.1", port=4573, channel="Local/4930123400@from-pstn-00000000;2",
                     uniqueid="1795699120.1", callerid="+4930111111", calleridname="", context="from-pstn",
                     extension="4930123400", priority=3, threadid=139830812919488,
                     args=("4930123400",)) == recorded


@pytest.mark.parametrize("name, index, session", RECORDED, ids=lambda v: v if isinstance(v, (str, int)) else "")
def test_env_block_reproduces_every_recorded_env(name, index, session):
    env, _ = parse_env(session.env)
    unknown = lambda value: "" if value == "unknown" else value  # noqa: E731 - Asterisk's placeholder
    host, port = env["request"].split("/")[2].split(":")
    rebuilt = env_block(env["network_script"], host=host, port=int(port), channel=env["channel"],
                        uniqueid=env["uniqueid"], callerid=unknown(env["callerid"]),
                        calleridname=unknown(env["calleridname"]), context=env["context"],
                        extension=env["extension"], args=env.args, priority=int(env["priority"]),
                        dnid=unknown(env["dnid"]), rdnis=unknown(env["rdnis"]), threadid=int(env["threadid"]))
    assert rebuilt == session.env  # callingpres 67 for 03a (no caller ID at all) comes from the default


class TinyAgiServer:
    """A FastAGI server on loopback: reads the env, then runs ``scripts[agi_network_script](ask)``."""

    def __init__(self, scripts):
        self.scripts, self.sessions = scripts, []  # per connection: {"env", "replies", "after"}
        self.server = StreamServer(("127.0.0.1", 0), self._handle, spawn=Pool(10))  # stop() waits for the pool

    def _handle(self, sock, _address):
        sock.settimeout(5)
        rfile = sock.makefile("rb")
        env = b""
        while not env.endswith(b"\n\n"):
            line = rfile.readline()
            assert line, "EOF inside the env block"
            env += line
        record = {"env": env, "replies": []}
        self.sessions.append(record)

        def ask(command):  # one command, then its reply (an unsolicited HANGUP kept, skipped): never pipelined
            sock.sendall(command)
            while True:
                record["replies"].append(rfile.readline())
                if record["replies"][-1] != b"HANGUP\n":
                    return record["replies"][-1]

        self.scripts[parse_env(env)[0].script](ask)
        sock.shutdown(stdsocket.SHUT_WR)
        record["after"] = rfile.read()  # what Asterisk sends after we close: the final HANGUP

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(timeout=1)


def incoming(ask):
    ask(b"GET VARIABLE CALLERID(num)\n")
    ask(b"GET FULL VARIABLE ${CHANNEL(linkedid)}\n")
    ask(set_variable("CRM_OWNER_EXTEN", "101"))
    ask(set_variable("CALLERID(name)", "Anna \"Annie\" O'Neil"))


def hangup(ask):
    for name in ("CRM_OWNER_EXTEN", "DIALSTATUS", "ANSWEREDTIME", "HANGUPCAUSE", "AGISTATUS"):
        ask(b"GET VARIABLE " + name.encode() + b"\n")
    ask(b"CHANNEL STATUS\n")


def test_simulated_call_sets_in_incoming_and_reads_back_in_hangup():
    with TinyAgiServer({"incoming": incoming, "hangup": hangup}) as server:
        call = SimulatedCall(server.server.address, "incoming", number="4930123400", callerid="+4930111111",
                             uniqueid="1795699120.1")
        first, last = call.run(dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "5", "HANGUPCAUSE": "16"},
                               hangup_args=("${DIALSTATUS}", "${CDR(billsec)}"))
    into, out = server.sessions
    assert into["replies"] == [b"200 result=1 (+4930111111)\n", b"200 result=1 (1795699120.1)\n",
                               b"200 result=1\n", b"200 result=1\n"]
    assert first.variables == {"CRM_OWNER_EXTEN": "101", "CALLERID(name)": "Anna \"Annie\" O'Neil"}
    assert out["replies"] == [b"200 result=1 (101)\n", b"200 result=1 (ANSWER)\n", b"200 result=1 (5)\n",
                              b"200 result=1 (16)\n", b"200 result=1 (SUCCESS)\n", DEAD_REPLY]
    assert into["after"] == out["after"] == b"HANGUP\n"
    assert (first.agistatus, last.agistatus) == ("SUCCESS", "SUCCESS") and last.variables == {}
    assert first.server_closed and last.server_closed and not (first.pipelined or last.pipelined)
    env, hang = parse_env(into["env"])[0], parse_env(out["env"])[0]
    assert (env.script, env["context"], env["extension"], env.args) == ("incoming", "crmagi-inbound", "s",
                                                                        ["4930123400"])
    assert env["calleridname"] == "unknown" and env["type"] == "PJSIP" and env["dnid"] == "4930123400"
    assert (hang.script, hang["context"], hang.args) == ("hangup", "crmagi-hangup", ["ANSWER", "0"])
    assert hang["calleridname"] == "Anna \"Annie\" O'Neil"  # SET in incoming, as in recording 01
    assert hang["uniqueid"] == env["uniqueid"] and hang["channel"] == env["channel"] == call.channel.name
    assert call.channel.vars["CRM_DIRECTION"] == "Inbound" and call.channel.dead


def test_caller_hangs_up_during_outgoing_agi_so_dial_never_ran():
    def slow(ask):
        ask(set_variable("CRM_STATUS", "found"))
        ask(b"GET VARIABLE CALLERID(num)\n")  # the caller hangs up meanwhile: HANGUP comes first
        ask(b"ANSWER\n")

    with TinyAgiServer({"outgoing": slow, "hangup": hangup}) as server:
        call = SimulatedCall(server.server.address, "outgoing", number="004930987654", callerid="101",
                             calleridname="Alice")
        first, last = call.run(dial={"DIALSTATUS": "ANSWER", "HANGUPCAUSE": "16"}, hangup_after=0.0)
    assert server.sessions[0]["replies"] == [b"HANGUP\n", b"200 result=1\n", b"200 result=1 (101)\n", DEAD_REPLY]
    assert first.agistatus == "HANGUP" and call.channel.vars["CRM_STATUS"] == "found"
    assert server.sessions[1]["replies"][1] == b"200 result=0\n"  # DIALSTATUS unset: Dial never ran
    assert server.sessions[1]["replies"][4] == b"200 result=1 (HANGUP)\n"  # AGISTATUS
    assert call.channel.name.startswith("PJSIP/101-") and last.agistatus == "SUCCESS"


def test_server_down_gives_agistatus_failure_and_the_call_goes_on():
    probe = stdsocket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()  # nothing listens there now: connection refused at once (fixture 10b)
    call = SimulatedCall(address, "incoming", number="4930123400", callerid="+4930111111")
    first, last = call.run(dial={"DIALSTATUS": "NOANSWER"})
    assert (first.agistatus, last.agistatus) == ("FAILURE", "FAILURE")
    assert call.channel.vars["DIALSTATUS"] == "NOANSWER" and first.commands == [] and first.replies == []
