"""Tier a: agi/fastagi/protocol.py on the bytes a real Asterisk 22.10.1 sent and received (fixtures/asterisk)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agi.errors import AgiDeadChannel, AgiInvalidCommand, AgiProtocolError, AgiUsage
from agi.fastagi.protocol import (MAX_COMMAND, MAX_ENV_LINES, MAX_LINE, format_command, get_full_variable,
                          get_variable, is_hangup, parse_env, parse_reply, quote, reply_is_complete,
                          set_variable, split_line, verbose)
from asterisk_replay import load_agi_transcript, parse_args
from conftest import ASTERISK

TRANSCRIPTS = sorted(ASTERISK.glob("*.agi.txt"))
SESSIONS = [(path.name, index, session) for path in TRANSCRIPTS
            for index, session in enumerate(load_agi_transcript(path))]
WITH_ENV = [item for item in SESSIONS if item[2].env]
EXCHANGES = [(name, exchange) for name, _, session in SESSIONS for exchange in session.exchanges]
ANSWERED = [(name, exchange) for name, exchange in EXCHANGES if exchange.reply]
USAGE_SET_VARIABLE = (b"520-Invalid command syntax.  Proper usage follows:\n"
                      b"Sets a variable to the current channel.\n520 End of proper usage.\n")


def session(name, index=0):
    return next(s for n, i, s in SESSIONS if n.startswith(name) and i == index)


def text_lines(raw_lines):
    """Reply lines as the session reads them: split_line() strips the "\\n"."""
    return [split_line(line)[0].decode("utf-8") for line in raw_lines]


# --- environment -----------------------------------------------------------------------------

def _ids(value):
    return value if isinstance(value, (str, int)) else ""


@pytest.mark.parametrize("name, index, recorded", WITH_ENV, ids=_ids)
def test_every_recorded_env_block_parses(name, index, recorded):
    env, rest = parse_env(recorded.env + b"GET VARIABLE X\n")
    assert rest == b"GET VARIABLE X\n"
    assert env["network_script"] == recorded.script and env["network"] == "yes"
    assert env["version"] == "22.10.1" and env["uniqueid"] and env["channel"].startswith("Local/")
    assert env["accountcode"] == ""
    assert len(env) == recorded.env.count(b"\n") - 1
    args = recorded.env.split(b"agi_arg_")[1:]
    assert env.args == [line.split(b": ", 1)[1].rstrip(b"\n").decode() for line in args]


def test_empty_agi_args_stay_empty_strings():
    env, _ = parse_env(session("10a", 1).env)  # hangup,${DIALSTATUS},${ANSWEREDTIME},${CDR(billsec)},...
    assert env.args == ["", "", "0", ""]
    assert env["arg_1"] == "" and env.arg(1) == "" and env.arg(1, "NONE") == "NONE"
    env, _ = parse_env(session("02a", 1).env)
    assert env.args[:3] == ["NOANSWER", "", "0"]


def test_env_values_reach_us_raw():
    env, _ = parse_env(session("03d").env)
    assert env["calleridname"] == "Robert'); DROP TABLE calls;-- \"Bobby\""
    assert env["callerid"] == "+4930999999"
    env, _ = parse_env(session("03a").env)
    assert (env["callerid"], env["calleridname"], env["callingpres"]) == ("unknown", "unknown", "67")
    env, _ = parse_env(session("01", 1).env)
    assert env["calleridname"] == "Anna \"Annie\" O'Neil"
    assert env["request"] == "agi://127.0.0.1:4573/hangup"
    env, _ = parse_env(session("10d").env)
    assert (env["network_script"], env.script, env.query) == ("incoming?delay=4", "incoming", "delay=4")


@pytest.mark.parametrize("junk", [
    b"", b"\n", b"GET / HTTP/1.1\r\nHost: crm\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
    b"agi_network: yes\nagi_network_script: incoming\n",               # half a block: no empty line
    b"agi_network: yes\n\n",                                            # no script, no request
    b"agi_network: yes\nAGI_CHANNEL: x\n\n", b"agi_network yes\n\n", b"agi_network_script: x\nHANGUP\n\n",
    b"agi_network_script: x\n" + b"agi_x: y\n" * MAX_ENV_LINES + b"\n",
    b"agi_network_script: " + b"x" * MAX_LINE + b"\n\n",
], ids=lambda junk: repr(junk[:24]))
def test_junk_and_half_env_blocks_raise(junk):
    with pytest.raises(AgiProtocolError):
        parse_env(junk)


def test_every_truncation_of_a_real_env_block_raises():
    env = session("01").env
    for end in range(len(env)):
        with pytest.raises(AgiProtocolError):
            parse_env(env[:end])


# --- replies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, exchange", ANSWERED, ids=_ids)
def test_every_recorded_reply_parses(name, exchange):
    lines = text_lines(exchange.reply)
    assert reply_is_complete(lines) and not any(reply_is_complete(lines[:n]) for n in range(1, len(lines)))
    code = lines[0][:3]
    if code == "200":
        reply = parse_reply(lines)
        assert (reply.code, str(reply.result)) == (200, lines[0].split("=", 1)[1].split(" ")[0])
    else:
        error = {"510": AgiInvalidCommand, "511": AgiDeadChannel, "520": AgiUsage}[code]
        with pytest.raises(error) as raised:
            parse_reply(lines)
        assert str(raised.value) == "\n".join(lines)


@pytest.mark.parametrize("line, result, data, value", [
    ("200 result=1 (+4930111111)", 1, "+4930111111", "+4930111111"),
    ("200 result=1 (Anna \"Annie\" O'Neil)", 1, "Anna \"Annie\" O'Neil", "Anna \"Annie\" O'Neil"),
    ("200 result=1 (say \"hi\" to O'Neil; \\ backslash)", 1, "say \"hi\" to O'Neil; \\ backslash", None),
    ("200 result=1 ()", 1, "", ""),                        # 03a CALLERID(num), 02a ANSWEREDTIME: set, empty
    ("200 result=0", 0, None, None),                       # unset
    ("200 result=-2", -2, None, None),                     # EXEC of an unknown application
    ("200 result=-1", -1, None, None),                     # EXEC Playback on a dead channel
    ("200 result=1 (Müller-Lüdenscheidt)", 1, "Müller-Lüdenscheidt", None),
    ("200 result=0 endpos=1234", 0, None, None),
])
def test_reply_values(line, result, data, value):
    reply = parse_reply([line])
    assert (reply.result, reply.data) == (result, data)
    if value is not None or result != 1:
        assert reply.value == value


def test_multiline_520_keeps_its_full_text():
    usage = session("10e").exchanges[2]  # GET VARIABLE without a name
    lines = text_lines(usage.reply)
    assert lines[0] == "520-Invalid command syntax.  Proper usage follows:" and len(lines) == 4
    assert not reply_is_complete(lines[:3])
    with pytest.raises(AgiUsage) as raised:
        parse_reply(lines)
    assert "<replaceable>variablename</replaceable>" in str(raised.value)
    assert str(raised.value).endswith("return code: 200 result=1 (testvariable)\n520 End of proper usage.")
    assert session("10e").exchanges[1].reply == USAGE_SET_VARIABLE.splitlines(keepends=True)


def test_hangup_lines_and_non_replies():
    assert is_hangup("HANGUP") and is_hangup("HANGUP\n") and not is_hangup("200 result=1 (HANGUP)")
    for junk in (["HANGUP"], ["hello"], ["200 result=x"], ["200"]):
        with pytest.raises(AgiProtocolError):
            parse_reply(junk)


# --- split_line ------------------------------------------------------------------------------

def test_split_line():
    assert split_line(b"200 result=1\nHANGUP\n") == (b"200 result=1", b"HANGUP\n")
    assert split_line(b"200 result=1\r\n") == (b"200 result=1", b"")
    assert split_line(b"200 res") == (None, b"200 res")
    assert split_line(b"x" * MAX_LINE + b"\n") == (b"x" * MAX_LINE, b"")
    assert split_line(b"x" * MAX_LINE) == (None, b"x" * MAX_LINE)
    for over in (b"x" * (MAX_LINE + 1), b"x" * (MAX_LINE + 1) + b"\n"):
        with pytest.raises(AgiProtocolError):
            split_line(over)


# --- commands --------------------------------------------------------------------------------

def _rebuild(argv):
    """What protocol.py sends for a recorded command: its builder, else the plain words."""
    command = " ".join(argv[:3]).upper()
    if command.startswith("SET VARIABLE") and len(argv) == 4:
        return set_variable(argv[2], argv[3])
    if command.startswith("GET VARIABLE") and len(argv) == 3:
        return get_variable(argv[2]).replace(b"GET VARIABLE", b" ".join(w.encode() for w in argv[:2]))
    if command == "GET FULL VARIABLE" and len(argv) == 4:
        return get_full_variable(argv[3])
    if command.startswith("VERBOSE") and len(argv) == 3:
        return verbose(argv[1], int(argv[2]))
    if command.startswith("EXEC") and len(argv) == 3:
        return format_command("EXEC", argv[1], args=argv[2:])
    return format_command(*argv)


@pytest.mark.parametrize("name, exchange", EXCHANGES, ids=_ids)
def test_builders_say_what_the_recorded_commands_said(name, exchange):
    """Asterisk reads the same words from our line; where the recording quoted, byte for byte."""
    recorded = exchange.command
    argv = parse_args(recorded.decode("utf-8")[:-1])
    rebuilt = _rebuild(argv)
    assert parse_args(rebuilt.decode("utf-8")[:-1]) == argv
    if b'"' in recorded or not recorded.startswith((b"SET VARIABLE", b"EXEC")):
        assert rebuilt == recorded  # unquoted values like "SET VARIABLE CRM_OWNER_EXTEN 101" we send quoted


@pytest.mark.parametrize("built, recorded_in, line", [
    (set_variable("CALLERID(name)", "Anna \"Annie\" O'Neil"), "01",
     b'SET VARIABLE CALLERID(name) "Anna \\"Annie\\" O\'Neil"\n'),
    (set_variable("CRM_Q", "say \"hi\" to O'Neil; \\ backslash"), "10e",
     b'SET VARIABLE CRM_Q "say \\"hi\\" to O\'Neil; \\\\ backslash"\n'),
    (set_variable("CRM_EMPTY", ""), "10e", b'SET VARIABLE CRM_EMPTY ""\n'),
    (set_variable("CRM_UTF8", "Müller-Lüdenscheidt"), "10e",
     'SET VARIABLE CRM_UTF8 "Müller-Lüdenscheidt"\n'.encode()),
    (verbose("crm lookup done for +4930111111", 1), "01", b'VERBOSE "crm lookup done for +4930111111" 1\n'),
    (format_command("EXEC", "Playback", args=("beep",)), "10a", b'EXEC Playback "beep"\n'),
    (get_full_variable("${CHANNEL(linkedid)}"), "01", b"GET FULL VARIABLE ${CHANNEL(linkedid)}\n"),
    (get_full_variable("${CALLERID(num)}-${EXTEN}"), "10e", b"GET FULL VARIABLE ${CALLERID(num)}-${EXTEN}\n"),
    (get_variable("CALLERID(num)"), "01", b"GET VARIABLE CALLERID(num)\n"),
])
def test_builders_reproduce_recorded_lines_byte_exact(built, recorded_in, line):
    assert built == line
    assert line in [e.command for e in session(recorded_in).exchanges]


def test_quote_turns_cr_lf_nul_into_spaces():
    assert quote("a\r\nb\x00c") == '"a  b c"'
    hostile = "Robert\nGET VARIABLE SECRET\r\nHANGUP"
    line = set_variable("CALLERID(name)", hostile)
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and b"\r" not in line
    assert parse_args(line.decode()[:-1])[3:] == ["Robert GET VARIABLE SECRET  HANGUP"]


@settings(deadline=None)      # about the quoting, not speed: a stalled box must not fail it as Flaky
@given(st.text(max_size=400))
def test_asterisk_reads_back_exactly_what_we_quote(value):
    line = format_command("SET VARIABLE", "X", args=(value,))
    expected = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    assert parse_args(line.decode("utf-8")[:-1]) == ["SET", "VARIABLE", "X", expected]


def test_get_full_variable_keeps_an_expression_with_spaces_in_one_argument():
    line = get_full_variable('${CALLERID(num)} ${CALLERID(name)} "x" \\')
    assert parse_args(line.decode()[:-1])[3:] == ['${CALLERID(num)} ${CALLERID(name)} "x" \\']


def test_commands_asterisk_would_cut_or_split_are_refused():
    assert len(set_variable("X", "a" * (MAX_COMMAND - len('SET VARIABLE X ""\n')))) == MAX_COMMAND
    with pytest.raises(ValueError):
        set_variable("X", "a" * MAX_COMMAND)  # fgets() would cut it and run the rest as a command
    for bad in ("", "A B", "X\nY", 'X"', "X;Y"):
        with pytest.raises(ValueError):
            set_variable(bad, "1")
    with pytest.raises(ValueError):
        get_full_variable("${X}\nNOOP")
    with pytest.raises(ValueError):
        format_command("GET VARIABLE X\nNOOP")
