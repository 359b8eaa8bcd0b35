"""The FastAGI wire format as pure functions: no sockets, no clocks.

What Asterisk 22 sends (see shared/fixtures/asterisk): an environment block of
``agi_key: value\\n`` lines ended by an empty line; then one reply per command,
``200 result=N [(data)] [extra]``, or ``510``/``511`` lines, or a multi-line
``520-...`` usage text closed by ``520 End of proper usage.``.  A ``HANGUP``
line may arrive at any moment, unsolicited, and must be skipped.
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from agi.errors import AgiDeadChannel, AgiInvalidCommand, AgiProtocolError, AgiUsage

MAX_LINE = 8192          # longer lines are not AGI: Asterisk's own limit is 2 KB per command
MAX_COMMAND = 2047       # res_agi.c AGI_BUF_LEN: fgets() cuts longer commands, the rest runs as the next one
MAX_ENV_LINES = 200      # Asterisk sends ~25 env lines plus agi_arg_N
HANGUP_LINE = "HANGUP"

_ENV_KEY = re.compile(r"^agi_[a-z0-9_]+$")
_REPLY = re.compile(r"^(\d{3}) result=(-?\d+)(?: \((.*)\))?(?: (.*))?$")
_VAR_NAME = re.compile(r"^[A-Za-z0-9_.:()${}\-]+$")


class AgiEnv(dict):
    """The agi_* environment, keys without the ``agi_`` prefix."""

    @property
    def script(self):
        """agi_network_script without its query string (``incoming?delay=4`` -> ``incoming``)."""
        return self.get("network_script", "").split("?", 1)[0].strip("/")

    @property
    def query(self):
        return self.get("network_script", "").partition("?")[2]

    @property
    def args(self) -> List[str]:
        args, n = [], 1
        while "arg_%d" % n in self:
            args.append(self["arg_%d" % n])
            n += 1
        return args

    def arg(self, n, default=""):
        return self.get("arg_%d" % n, default) or default


@dataclass(frozen=True)
class AgiReply:
    code: int
    result: int
    data: Optional[str]      # the text in parentheses; None when absent
    extra: str = ""

    @property
    def value(self):
        """GET VARIABLE semantics: None when result=0 (unset), else the data."""
        return self.data if self.result == 1 else None


def split_line(buf: bytes) -> Tuple[Optional[bytes], bytes]:
    """Return (one line without its newline, rest) or (None, buf) when incomplete."""
    index = buf.find(b"\n")
    if index < 0:
        if len(buf) > MAX_LINE:
            raise AgiProtocolError("line longer than %d bytes" % MAX_LINE)
        return None, buf
    if index > MAX_LINE:
        raise AgiProtocolError("line longer than %d bytes" % MAX_LINE)
    line = buf[:index]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, buf[index + 1:]


def decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def parse_env_line(line: str) -> Tuple[str, str]:
    """``agi_callerid: +4930111111`` -> ("callerid", "+4930111111")."""
    key, sep, value = line.partition(":")
    if not sep or not _ENV_KEY.match(key):
        raise AgiProtocolError("not an AGI environment line: %r" % line[:80])
    return key[4:], value[1:] if value.startswith(" ") else value


def parse_env(data: bytes) -> Tuple[AgiEnv, bytes]:
    """Parse a complete environment block; returns the env and the bytes after it."""
    env, rest = AgiEnv(), data
    for count in range(MAX_ENV_LINES + 1):  # count lines, not keys: a key may repeat
        line, rest = split_line(rest)
        if line is None:
            raise AgiProtocolError("environment block is incomplete")
        if line == b"":
            if "network_script" not in env and "request" not in env:
                raise AgiProtocolError("environment block has no agi_network_script")
            return env, rest
        if count == MAX_ENV_LINES:
            break
        key, value = parse_env_line(decode(line))
        env[key] = value
    raise AgiProtocolError("environment block has more than %d lines" % MAX_ENV_LINES)


def quote(value) -> str:
    """An AGI argument in double quotes, with ``\\`` and ``"`` escaped.

    Newlines would end the command line and let a caller-ID inject AGI
    commands, so CR/LF/NUL become spaces.  (pyst2's ``_quote`` does not escape.)
    """
    text = str(value)
    for char in "\r\n\x00":
        text = text.replace(char, " ")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_name(name: str) -> str:
    if not _VAR_NAME.match(name or ""):
        raise ValueError("not a channel variable name: %r" % name)
    return name


def format_command(*words, args=()) -> bytes:
    """Command words as given, then each argument quoted; one line."""
    parts = [str(word) for word in words] + [quote(arg) for arg in args]
    line = " ".join(parts)
    if "\n" in line or "\r" in line:
        raise ValueError("command words may not contain newlines")
    data = (line + "\n").encode("utf-8")
    if len(data) > MAX_COMMAND:
        raise ValueError("AGI command of %d bytes: Asterisk reads at most %d" % (len(data), MAX_COMMAND))
    return data


def set_variable(name, value) -> bytes:
    return format_command("SET VARIABLE", check_name(name), args=(value,))


# ARRAY() splits its value like application arguments (main/app.c __ast_app_separate_args):
# a comma ends a value, quotes, parentheses and brackets group, and a backslash makes the next
# character literal.  Escaping each of these characters keeps any value whole (checked on
# Asterisk 22.10.1 with commas, quotes, parentheses, brackets, backslashes, ${...}, leading and
# trailing spaces and non-ASCII text: tests/test_agi_multivar_peer.py).
_ARRAY_SPECIAL = re.compile(r'([\\,"()\[\]])')


def array_escape(value: str) -> str:
    return _ARRAY_SPECIAL.sub(r"\\\1", value)


def set_variables(pairs) -> List[bytes]:
    """Command lines that set every ``(name, value)`` of ``pairs``, in order, in as few
    commands as fit Asterisk's line: several at once through ``SET VARIABLE ARRAY(n1,n2,...)``
    (each command is a round trip; Asterisk takes no pipelining), a lone one plainly.  Each
    value is escaped once and the line's size kept as it grows (it was rebuilt for every
    value added: 53 escapes for a call's 9 variables)."""
    lines, group, size = [], [], _ARRAY_BASE
    for name, value in pairs:
        check_name(name)
        value = "" if value is None else str(value)
        escaped = array_escape(value)
        cost = len(name) + _quoted_size(escaped) + (2 if group else 0)    # the commas between
        if group and size + cost > MAX_COMMAND:
            lines.append(_set_line(group))
            group, size, cost = [], _ARRAY_BASE, cost - 2
        group.append((name, value, escaped))
        size += cost
    if group:
        lines.append(_set_line(group))
    return lines


_ARRAY_BASE = len('SET VARIABLE ARRAY() ""\n')


def _quoted_size(text) -> int:
    """Bytes ``quote(text)`` adds between its quotes: a backslash before each ``\\`` and ``"``."""
    return len(text.encode("utf-8")) + text.count("\\") + text.count('"')


def _set_line(group) -> bytes:
    """``group``: (name, value, escaped value) triples."""
    if len(group) == 1:
        return set_variable(group[0][0], group[0][1])
    return format_command("SET VARIABLE", "ARRAY(%s)" % ",".join(name for name, _, _ in group),
                          args=(",".join(escaped for _, _, escaped in group),))


def split_values(text, separator, count) -> Optional[List[str]]:
    """The ``count`` values of a GET FULL VARIABLE reply to expressions joined by ``separator``
    (Asterisk copies each one's value as it is), or None when they cannot be told
    apart (a value held the separator): the caller then reads them one by one."""
    if text is None:
        return None
    values = text.split(separator)
    return values if len(values) == count else None


def get_variable(name) -> bytes:
    return format_command("GET VARIABLE", check_name(name))


def get_full_variable(expression) -> bytes:
    if "\n" in expression or "\r" in expression:
        raise ValueError("expression may not contain newlines")
    if any(char in expression for char in ' \t"\\'):  # else Asterisk splits it: a 5th word is a channel name
        return format_command("GET FULL VARIABLE", args=(expression,))
    return format_command("GET FULL VARIABLE", expression)


def database_get(family, key) -> bytes:
    return format_command("DATABASE GET", args=(family, key))


def database_del(family, key) -> bytes:
    return format_command("DATABASE DEL", args=(family, key))


def verbose(message, level=1) -> bytes:
    return format_command("VERBOSE", args=(message,)) .rstrip(b"\n") + b" %d\n" % int(level)


def is_hangup(line: str) -> bool:
    return line.strip() == HANGUP_LINE


def reply_is_complete(lines: List[str]) -> bool:
    """A reply is one line, except 520- which runs until a line starting '520 '."""
    if not lines:
        return False
    if lines[0].startswith("520-"):
        return len(lines) > 1 and lines[-1].startswith("520 ")
    return True


def parse_reply(lines: List[str]) -> AgiReply:
    """Parse one complete reply; 510/511/520 raise their named errors."""
    first = lines[0]
    if first.startswith("520"):
        raise AgiUsage("\n".join(lines))
    if first.startswith("510"):
        raise AgiInvalidCommand(first)
    if first.startswith("511"):
        raise AgiDeadChannel(first)
    match = _REPLY.match(first)
    if not match:
        raise AgiProtocolError("not an AGI reply: %r" % first[:80])
    code, result, data, extra = match.groups()
    return AgiReply(int(code), int(result), data, extra or "")
