"""One FastAGI connection: the only code that reads or writes an AGI socket.

Commands are strictly one at a time (send, read the whole reply, then send the
next): Asterisk reads one command line per socket wake-up, so pipelined
commands hang (fixtures 10f).  Every read is bounded by a timeout, and the
unsolicited ``HANGUP`` line is recorded and skipped wherever it arrives.
"""
import logging
import secrets
import socket
import time

import gevent

from agi.fastagi import protocol
from agi.errors import AgiClosed, AgiHangup, AgiTimeout

log = logging.getLogger("crmagi.agi")
MAX_ENV_BYTES = 64 * 1024


class AgiSession:
    def __init__(self, sock, address=None, reply_timeout=2.0):
        self.sock = sock
        self.address = address
        self.reply_timeout = reply_timeout
        self.env = None
        self.hungup = False
        self.commands = 0
        self.variables = {}         # what this session set (CRM_STATUS for the metrics)
        self.closed_at = None       # time.monotonic() of the close: when Asterisk moved on
        self._buf = b""
        self._timeout = None        # the socket's current timeout (settimeout once per value)

    # -- reading -------------------------------------------------------
    def _fill(self, timeout):
        # The socket's own timeout, not a gevent.Timeout per read: no Timeout object and
        # message built for each of a session's ~10 reads (a quarter of the dialogue's CPU
        # over a bare gevent server, bench/agi_session.py).
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AgiTimeout("no data from %s in %.3gs" % (self._peer(), timeout)) from None
        except OSError as exc:
            raise AgiClosed("socket error from %s: %s" % (self._peer(), exc)) from None
        if not data:
            raise AgiClosed("%s closed the connection" % self._peer())
        self._buf += data

    def _line(self, timeout):
        while True:
            line, self._buf = protocol.split_line(self._buf)
            if line is not None:
                return protocol.decode(line)
            self._fill(timeout)

    def read_env(self, timeout):
        """Read the agi_* block; the whole block must arrive within ``timeout``."""
        with gevent.Timeout(timeout, AgiTimeout("incomplete AGI environment from %s after %.3gs" % (self._peer(), timeout))):
            while b"\n\n" not in self._buf and not self._buf.startswith(b"\n"):
                if len(self._buf) > MAX_ENV_BYTES:
                    raise protocol.AgiProtocolError("environment block larger than %d bytes" % MAX_ENV_BYTES)
                self._fill(timeout)
        self.env, self._buf = protocol.parse_env(self._buf)
        return self.env

    # -- commands --------------------------------------------------------
    def command(self, line: bytes) -> protocol.AgiReply:
        """Send one command line and return its parsed reply (510/511/520 raise)."""
        try:
            # One send() first: a command line fits the socket buffer, and gevent's
            # sendall() costs a getsockopt() and a deadline per call (both sessions of
            # a call send ~20 lines); sendall() only for what a full buffer left.
            sent = self.sock.send(line)
            if sent < len(line):
                self.sock.sendall(line[sent:])
        except OSError as exc:
            raise AgiClosed("cannot send to %s: %s" % (self._peer(), exc)) from None
        self.commands += 1
        lines = []
        while not protocol.reply_is_complete(lines):
            text = self._line(self.reply_timeout)
            if not lines and protocol.is_hangup(text):
                self.hungup = True      # unsolicited: the reply is still to come
                continue
            lines.append(text)
        return protocol.parse_reply(lines)

    def get_variable(self, name):
        return self.command(protocol.get_variable(name)).value

    def get_full_variable(self, expression):
        return self.command(protocol.get_full_variable(expression)).value

    def set_variable(self, name, value):
        self.command(protocol.set_variable(name, "" if value is None else value))
        self.variables[name] = value

    def set_variables(self, values, combined=True):
        """Set every variable of the dict ``values`` (in its order) in as few commands as fit
        (``combined`` False: one command each)."""
        lines = (protocol.set_variables(values.items()) if combined
                 else [protocol.set_variable(name, value) for name, value in values.items()])
        for line in lines:
            self.command(line)
        self.variables.update(values)

    def get_full_variables(self, expressions):
        """The values of several GET FULL VARIABLE expressions (``"${NAME}"``...) in one
        command ("" for an unset variable, as GET FULL VARIABLE says).  The separator is new
        for each read: a value a caller chose (a name, a file name) cannot forge one; should
        a value hold it anyway, each is read alone."""
        # Asterisk copies each ${...}'s value as it is, so the values come back between separators.
        separator = "~%s~" % secrets.token_hex(6)
        text = self.get_full_variable(separator.join(expressions))
        values = protocol.split_values(text, separator, len(expressions))
        if values is None:
            values = [self.get_full_variable(expression) or "" for expression in expressions]
        return values

    def database_get(self, family, key):
        return self.command(protocol.database_get(family, key)).value

    def database_del(self, family, key):
        self.command(protocol.database_del(family, key))

    def verbose(self, message, level=1):
        self.command(protocol.verbose(message, level))

    def require_alive(self):
        if self.hungup:
            raise AgiHangup("caller hung up")

    # -- closing -------------------------------------------------------
    def close(self):
        """Close now: Asterisk continues the dialplan as soon as the socket closes."""
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _peer(self):
        if isinstance(self.address, tuple):
            return "%s:%s" % self.address[:2]
        return str(self.address or "peer")
