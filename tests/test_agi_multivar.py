"""Several variables per FastAGI command (agi/fastagi/protocol.py, session.py, routes.py).

Each AGI command is a round trip Asterisk answers one at a time (no pipelining, fixture
10f), so a call's two requests set and read their variables in a few commands instead of
one per variable.  The real Asterisk's side is tests/test_agi_multivar_peer.py; here the
builders against the simulator's port of Asterisk's argument parsing, and the requests'
command counts against the simulated Asterisk.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agi.app import App
from agi.demo.asterisk_commands import Channel, answer, assignments, parse_args, separate_args
from agi.demo.simulator import SimulatedCall
from agi.fastagi import protocol, session as session_module
from agi.fastagi.session import AgiSession
from test_end_to_end import CONTACT, app_config, call, crmagi_row, db, rows, wait_for  # noqa: F401 (fixture)


def applied(line):
    """What Asterisk assigns for one SET VARIABLE line: res_agi's parse_args, then ARRAY()."""
    argv = parse_args(line.decode("utf-8")[:-1])
    assert argv[:2] == ["SET", "VARIABLE"] and len(argv) == 4, argv
    return assignments(argv[2], argv[3])


@pytest.mark.parametrize("text, args", [
    ("", []), ("a", ["a"]), ("a,", ["a", ""]), (",", ["", ""]), ("a,b", ["a", "b"]),
    ("f(x,y),z", ["f(x,y)", "z"]), ('"a,b",c', ["a,b", "c"]), ("a\\,b,c", ["a,b", "c"]),
    ("[1,2],3", ["[1,2]", "3"]), ("x)y,z", ["x)y", "z"]), ("a\\\\,b", ["a\\", "b"]), ("end\\", ["end"]),
])
def test_separate_args_is_asterisks(text, args):
    assert separate_args(text) == args


_NAMES = st.sampled_from(["CRM_STATUS", "CRM_MODULE", "CRM_RECORD_NAME", "CALLERID(name)", "CRM_CALL", "X"])


@settings(deadline=None, max_examples=300)
@given(st.lists(st.tuples(_NAMES, st.text(max_size=300)), min_size=1, max_size=12))
def test_asterisk_assigns_exactly_the_values_set_in_any_number_of_lines(pairs):
    lines = protocol.set_variables(pairs)
    assert all(len(line) <= protocol.MAX_COMMAND for line in lines)
    expected = [(name, value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")) for name, value in pairs]
    assert [pair for line in lines for pair in applied(line)] == expected


def reference_groups(pairs):
    """Greedy grouping by the size of each candidate line, built in full."""
    def size(group):
        return len(("SET VARIABLE ARRAY(%s) %s\n" % (",".join(n for n, _ in group), protocol.quote(
            ",".join(protocol.array_escape(v) for _, v in group)))).encode("utf-8"))
    groups = []
    for pair in pairs:
        if groups and size(groups[-1] + [pair]) <= protocol.MAX_COMMAND:
            groups[-1].append(pair)
        else:
            groups.append([pair])
    return groups


@settings(deadline=None, max_examples=300)
@given(st.lists(st.tuples(_NAMES, st.text(alphabet=st.sampled_from(list('ab,"\\()[]ü😀\r')), max_size=400)),
                min_size=1, max_size=14))
def test_lines_are_filled_as_far_as_asterisks_limit_allows(pairs):
    lines = protocol.set_variables(pairs)
    assert [len(applied(line)) for line in lines] == [len(group) for group in reference_groups(pairs)]


def test_the_contract_goes_in_one_command_and_a_lone_variable_in_a_plain_one():
    pairs = [("CRM_STATUS", "found"), ("CRM_RECORD_NAME", 'Müller, "Hans" (Berlin) [VIP] \\'),
             ("CALLERID(name)", "a,b"), ("CRM_CALL", "v1|x|%7C")]
    line, = protocol.set_variables(pairs)
    assert line.startswith(b"SET VARIABLE ARRAY(CRM_STATUS,CRM_RECORD_NAME,CALLERID(name),CRM_CALL) ")
    assert applied(line) == pairs
    assert protocol.set_variables([("X", "a,b")]) == [protocol.set_variable("X", "a,b")]


def test_values_too_long_for_one_line_are_split_over_several():
    pairs = [("V%d" % i, "x,(" * 90) for i in range(12)]
    lines = protocol.set_variables(pairs)
    assert len(lines) > 1 and all(len(line) <= protocol.MAX_COMMAND for line in lines)
    assert [pair for line in lines for pair in applied(line)] == pairs


class SimulatedSock:
    """A socket whose peer is the simulator's Asterisk on one channel (one reply per command)."""

    def __init__(self, chan):
        self.chan, self.sent, self.replies = chan, [], []

    def send(self, data):
        self.sent.append(bytes(data))
        self.replies.append(answer(self.chan, bytes(data), {}, {}))
        return len(data)

    def settimeout(self, _):
        pass

    def recv(self, _):
        return self.replies.pop(0) if self.replies else b""


def test_several_variables_are_read_in_one_command_unset_ones_empty():
    chan = Channel("PJSIP/x-1", linkedid="1.1", variables={"A": "a)b ~x~", "B": ""})
    sock = SimulatedSock(chan)
    assert AgiSession(sock).get_full_variables(["${A}", "${B}", "${UNSET}", "${CHANNEL(linkedid)}"]) == [
        "a)b ~x~", "", "", "1.1"]
    assert len(sock.sent) == 1 and sock.sent[0].startswith(b"GET FULL VARIABLE ${A}~")


def test_a_value_holding_the_separator_is_read_alone_not_misread(monkeypatch):
    monkeypatch.setattr(session_module.secrets, "token_hex", lambda n: "f00d")
    chan = Channel("PJSIP/x-1", variables={"A": "1~f00d~2", "B": "b"})
    sock = SimulatedSock(chan)
    assert AgiSession(sock).get_full_variables(["${A}", "${B}"]) == ["1~f00d~2", "b"]
    assert len(sock.sent) == 3      # the joined read, then one each


def test_each_read_has_its_own_separator():
    chan = Channel("PJSIP/x-1", variables={"A": "a"})
    sock = SimulatedSock(chan)
    agi = AgiSession(sock)
    agi.get_full_variables(["${A}", "${A}"])
    agi.get_full_variables(["${A}", "${A}"])
    assert sock.sent[0] != sock.sent[1]


ANSWERED = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "30", "DIALEDTIME": "35", "DIALEDPEERNUMBER": "101",
            "MIXMONITOR_FILENAME": "/r/in-1.wav"}


def test_a_call_takes_two_commands_in_each_request(db, crm_url, tmp_path):
    app = App(app_config(crm_url, tmp_path)).start()
    try:
        checked, _ = SimulatedCall(app.agi.address, number="4930123400", callerid="+4930222222").run(ANSWERED)
        assert len(checked.commands) == 3 and checked.commands[2].startswith(b"GET FULL VARIABLE ${CRM_CALL_ID}")
        assert app.flow.array_set is True       # the first answer of a process reads one back
        simulated = SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111",
                                  calleridname='O"Neil, (x)')
        first, last = simulated.run(ANSWERED)
        assert [c.split(b" ")[:3] for c in first.commands] == [[b"GET", b"FULL", b"VARIABLE"],
                                                                [b"SET", b"VARIABLE", b"ARRAY(CRM_STATUS,CRM_MODULE,"
                                                                 b"CRM_RECORD_ID,CRM_RECORD_NAME,CRM_OWNER_USER_ID,"
                                                                 b"CRM_OWNER_EXTEN,CRM_CALL_ID,CALLERID(name),CRM_CALL)"]]
        assert first.variables["CRM_STATUS"] == "found" and first.variables["CRM_OWNER_EXTEN"] == "101"
        assert first.variables["CALLERID(name)"] == simulated.channel.callerid_name
        assert len(last.commands) == 2 and last.variables == {"CRM_HANGUP": "done"}
        call_id = first.variables["CRM_CALL_ID"]
        wait_for(lambda: rows(db, "SELECT 1 FROM crmagi_calls WHERE call_id=:c AND ended_at IS NOT NULL", c=call_id),
                 timeout=10)
        row = call(db, call_id, status="Held")
        assert row["parent_id"] == CONTACT
        assert crmagi_row(db, row["id"])["recording"] == "/r/in-1.wav"
    finally:
        app.stop(timeout=1)


def test_an_asterisk_without_array_gets_one_command_per_variable_after_one_error(db, crm_url, tmp_path,
                                                                                   monkeypatch, caplog):
    """Without func_strings.so Asterisk answers ``200 result=1`` to ARRAY() and sets nothing: the
    first answer reads one back, logs an error, sets them one by one, and so do all later ones."""
    from agi.demo import asterisk_commands
    monkeypatch.setattr(asterisk_commands, "assignments", lambda name, value: [(name, value)])
    app = App(app_config(crm_url, tmp_path)).start()
    try:
        first, _ = SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111").run(ANSWERED)
        assert first.variables["CRM_OWNER_EXTEN"] == "101" and first.variables["CRM_STATUS"] == "found"
        assert app.flow.array_set is False and "is func_strings.so loaded?" in caplog.text
        second, _ = SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111").run(ANSWERED)
        assert not any(b"ARRAY(" in c for c in second.commands) and second.variables["CRM_OWNER_EXTEN"] == "101"
        assert len(second.commands) == 1 + 9
    finally:
        app.stop(timeout=1)
