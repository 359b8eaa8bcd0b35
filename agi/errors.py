"""Exception tree for the Asterisk side.

The AGI errors subclass pyst2's own classes (asterisk.agi), so code written
against pyst2 keeps catching what it expects; the codes come from the AGI
protocol (510, 511, 520) and the unsolicited HANGUP line.
"""
from asterisk.agi import AGIAppError, AGIError, AGIHangup, AGIInvalidCommand, AGIUsageError


class AgiError(AGIError):
    """Any failure talking FastAGI."""


class AgiProtocolError(AgiError):
    """Asterisk (or whatever is on the socket) sent bytes that are not AGI."""


class AgiTimeout(AgiError):
    """The peer did not send what we waited for in time."""


class AgiClosed(AgiError):
    """The peer closed the socket."""


class AgiInvalidCommand(AgiError, AGIInvalidCommand):
    """510 Invalid or unknown command."""


class AgiDeadChannel(AgiError, AGIAppError):
    """511 Command Not Permitted on a dead channel or intercept routine."""


class AgiUsage(AgiError, AGIUsageError):
    """520 Invalid command syntax (multi-line usage text attached)."""


class AgiHangup(AgiError, AGIHangup):
    """The channel hung up (the unsolicited HANGUP line was seen)."""


class ConfigError(Exception):
    """A config value is wrong; the message names [section] key."""


class HaltServer(BaseException):
    """Fatal: stop the whole process (reserved for unrecoverable start-up errors)."""


class AmiError(Exception):
    """Any failure talking to the Asterisk Manager Interface."""


class AmiProtocolError(AmiError):
    """The peer sent bytes that are not AMI."""


class AmiDisconnected(AmiError):
    """The AMI connection is down; pending actions fail with this instead of waiting."""


class AmiActionFailed(AmiError):
    """Asterisk answered an action with Response: Error."""
