"""What Asterisk 22's res_agi.c answers to one FastAGI command line.

A port of parse_args(), find_command() and agi_handle_command() for the commands a
CRM integration sends, checked byte for byte against recordings of a real Asterisk
22.10.1 (tests/test_asterisk_replay.py): ``510`` for unknown commands, multi-line
``520`` usage replies for a wrong argument count, ``511`` for most commands on a
dead channel (a hangup handler, or after the caller hung up), ``200 result=0`` for
an unset variable.  The socket side lives in agi/demo/simulator.py.
"""
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import quote

from agi.fastagi.protocol import MAX_COMMAND, AgiEnv

AGI_BUF_LEN = MAX_COMMAND + 1  # res_agi.c: fgets() takes at most 2047 bytes; the rest is the next "command"
MAX_ARGS = 128
DEAD_REPLY = b"511 Command Not Permitted on a dead channel or intercept routine\n"

_COMMANDS = [tuple(name.split()) for name in (
    "answer|asyncagi break|channel status|control stream file|database del|database deltree|database get|"
    "database put|exec|get data|get full variable|get option|get variable|gosub|hangup|noop|receive char|"
    "receive text|record file|say alpha|say digits|say number|say phonetic|say date|say time|say datetime|"
    "send image|send text|set autohangup|set callerid|set context|set extension|set music|set priority|"
    "set variable|stream file|tdd mode|verbose|wait for digit").split("|")]  # (speech * left out)
_DEAD_OK = {"asyncagi break", "database del", "database deltree", "database get", "database put", "exec",
            "get full variable", "get variable", "noop", "set variable", "verbose"}
_USAGE = {  # recorded (fixture 10e); other commands' usage texts were not recorded and get a placeholder
    "set variable": "Sets a variable to the current channel.\n",
    "get variable": "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. "
                    "Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set and "
                    "returns the variable in parentheses.\nExample return code: 200 result=1 (testvariable)\n"}
_CHECKED = {"set variable", "get variable", "get full variable", "exec", "database put", "database get",
            "database del", "verbose", "channel status", "hangup"}  # wrong argc: 520 usage
_APPS_DEAD_OK = {"noop", "set", "verbose", "log", "userevent", "system"}
_APPS = _APPS_DEAD_OK | {"answer", "hangup", "playback", "background", "wait", "dial", "queue", "read",
                         "mixmonitor", "stopmixmonitor", "goto", "gosub", "ringing", "progress", "busy"}
_BUILTINS = {"EXTEN": "extension", "CONTEXT": "context", "PRIORITY": "priority", "CHANNEL": "channel",
             "UNIQUEID": "uniqueid", "CALLINGPRES": "callingpres", "CALLINGANI2": "callingani2",
             "CALLINGTON": "callington", "CALLINGTNS": "callingtns"}


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


def separate_args(text: str, delim: str = ",") -> List[str]:
    """main/app.c __ast_app_separate_args() with remove_chars (AST_STANDARD_APP_ARGS): the
    delimiter splits outside parentheses, brackets and double quotes; quotes are dropped and a
    backslash makes the next character literal (and is dropped)."""
    args, current, paren, bracket, quoted, i = [], [], 0, 0, False, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 1
            if i < len(text):
                current.append(text[i])
        elif char == '"' and delim != '"':
            quoted = not quoted
        elif char == delim and not (paren or bracket or quoted):
            args.append("".join(current))
            current = []
        else:
            paren += 1 if char == "(" else -1 if char == ")" and paren else 0
            bracket += 1 if char == "[" else -1 if char == "]" and bracket else 0
            current.append(char)
        i += 1
    if current or args or text:
        args.append("".join(current))
    return args


def set_variable(chan: "Channel", name: str, value: str, assigned: Dict[str, str]) -> None:
    """``SET VARIABLE name value`` on ``chan``, each variable it sets noted in ``assigned``."""
    for var, var_value in assignments(name, value):
        chan.write(var, var_value)
        assigned[var] = var_value


def assignments(name: str, value: str) -> List[Tuple[str, str]]:
    """What ``SET VARIABLE name value`` assigns: func_strings.c ARRAY(n1,n2,...) sets each name
    to its value of the comma-separated list (missing ones to ""); any other name, itself."""
    if name.upper().startswith("ARRAY(") and name.endswith(")"):
        names, values = separate_args(name[6:-1]), separate_args(value)
        return [(var, values[i] if i < len(values) else "") for i, var in enumerate(names)]
    return [(name, value)]


def find_command(argv: List[str]) -> Optional[str]:
    """The command's lower-case name ("get full variable"), or None: ``510``."""
    words = tuple(word.lower() for word in argv)
    for command in _COMMANDS:
        if words[:len(command)] == command:
            return " ".join(command)
    return None


class Channel:
    """One channel as AGI sees it, shared by every AGI session that runs on it.

    ``env`` is the agi_* block of the session running now (EXTEN, CONTEXT, UNIQUEID ...
    are read from it); ``dead`` makes it a hangup handler's channel: 511 for most
    commands and ``HANGUPCAUSE`` = ``cause``."""

    def __init__(self, name: str, *, callerid: str = "", calleridname: str = "", linkedid: str = "",
                 variables: Optional[Dict[str, str]] = None):
        self.name, self.vars, self.functions = name, dict(variables or {}), {}
        self.env, self.callerid_num, self.callerid_name = AgiEnv(), callerid, calleridname
        self.linkedid, self.cause, self.state, self.dead, self.soft_hangup = linkedid, "0", 4, False, False
        self.astdb: Dict[Tuple[str, str], str] = {}     # the AstDB the session runs against (answer())

    def read(self, name: str) -> Optional[str]:
        """GET VARIABLE: a function when the name ends in ")", else a builtin, else a channel variable."""
        if name.endswith(")") and "(" in name:
            func, _, arg = name[:-1].partition("(")
            key, arg = func.upper() + "(" + arg + ")", arg.strip().lower()
            if func.upper() == "CALLERID":
                return {"num": self.callerid_num, "number": self.callerid_num, "name": self.callerid_name,
                        "all": '"%s" <%s>' % (self.callerid_name, self.callerid_num)}.get(arg)
            if func.upper() == "DB_KEYS":      # func_db.c: sorted keys one level below the family
                family = name[len("DB_KEYS("):-1].strip("/")
                return ",".join(sorted(k for f, k in self.astdb if f == family))
            if func.upper() == "URIENCODE":    # func_uri.c: ast_uri_encode(..., ast_uri_http)
                return quote(name[len("URIENCODE("):-1], safe="-_.!~*'()")
            if func.upper() == "DB":
                family, _, dbkey = name[3:-1].partition("/")
                return self.astdb.get((family, dbkey))
            if func.upper() == "CHANNEL":
                return {"linkedid": self.linkedid, "uniqueid": self.env.get("uniqueid"),
                        "name": self.name}.get(arg)
            if key in self.functions or func.upper() != "CDR":
                return self.functions.get(key)
            return "0" if arg in ("billsec", "duration") else ""  # CDR(billsec) is 0 in a hangup handler
        if name in _BUILTINS:
            return self.env.get(_BUILTINS[name])
        if name == "EPOCH":
            return str(int(time.time()))
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
            name, offset, length = _substring(self.expand(text[i + 2:j - 1]))
            value = self.read(name) or ""
            if offset is not None:   # ${NAME:offset:length}, as pbx.c's substring()
                start = max(0, len(value) + offset) if offset < 0 else offset
                value = value[start:] if length is None else value[start:start + length]
            out.append(value)
            i = j
        return "".join(out)


def _substring(name: str) -> Tuple[str, Optional[int], Optional[int]]:
    """Split ``NAME:offset:length`` at the first ':' outside parentheses."""
    depth = 0
    for index, char in enumerate(name):
        depth += 1 if char == "(" else -1 if char == ")" else 0
        if char == ":" and depth == 0:
            parts = name[index + 1:].split(":")
            try:
                numbers = [int(part) for part in parts[:2]]
            except ValueError:
                return name, None, None
            return name[:index], numbers[0], numbers[1] if len(numbers) > 1 else None
    return name, None, None


def answer(chan: Channel, line: bytes, astdb: Dict[Tuple[str, str], str], assigned: Dict[str, str]) -> bytes:
    """Asterisk's complete reply to one command line; ``assigned`` collects SET VARIABLE / EXEC Set."""
    text = line.decode("utf-8", "surrogateescape")
    argv = parse_args(text[:-1] if text.endswith("\n") else text)  # only "\n" is stripped, not "\r"
    name = find_command(argv)
    if name is None:
        return b"510 Invalid or unknown command\n"
    if chan.dead and name not in _DEAD_OK:
        return DEAD_REPLY
    chan.astdb = astdb
    reply = _run(name, chan, argv, astdb, assigned)
    if reply is None:
        usage = _USAGE.get(name, "(usage of %s: not recorded)\n" % name.upper())
        reply = "520-Invalid command syntax.  Proper usage follows:\n%s520 End of proper usage.\n" % usage
    return reply.encode("utf-8", "surrogateescape")


def _run(name: str, chan: Channel, argv: List[str], astdb, assigned) -> Optional[str]:
    """One command's reply, or None for a 520 usage reply (the argc checks of res_agi.c)."""
    argc, key = len(argv), tuple(argv[2:4])
    if name == "set variable" and argc == 4:
        set_variable(chan, argv[2], argv[3], assigned)
        return "200 result=1\n"
    if name == "get variable" and argc == 3:
        return _value(chan.read(argv[2]))
    if name == "get full variable" and argc in (4, 5):  # argv[4]: another channel's name
        return _value(chan.expand(argv[3]) if argc == 4 or argv[4] == chan.name else None)
    if name == "exec" and argc >= 2:
        return "200 result=%d\n" % _exec(chan, argv[1].lower(), argv[2] if argc > 2 else "", assigned)
    if name == "database put" and argc == 5:
        astdb[key] = argv[4]
        return "200 result=1\n"
    if name == "database get" and argc == 4:
        return _value(astdb.get(key))
    if name == "database del" and argc == 4:
        return "200 result=%d\n" % (astdb.pop(key, None) is not None)
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


def _exec(chan: Channel, app: str, options: str, assigned: Dict[str, str]) -> int:
    if app not in _APPS:
        return -2
    if app == "set" and "=" in options:
        var, _, value = options.partition("=")
        chan.write(var, value)
        assigned[var] = value
    chan.soft_hangup = chan.soft_hangup or app == "hangup"
    return 0 if app in _APPS_DEAD_OK or not (chan.dead or chan.soft_hangup) else -1


def _value(value: Optional[str]) -> str:
    return "200 result=0\n" if value is None else "200 result=1 (%s)\n" % value
