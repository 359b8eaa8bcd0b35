"""Running under systemd: the unit file `crmagi systemd-unit` prints, and sd_notify.

The unit is a template shipped in the package (agi/ops/crmagi.service.j2); rendering
only fills in the command line, the user and the directories it may write.
``notify`` speaks the sd_notify datagram protocol itself (a few lines; no
libsystemd binding): without $NOTIFY_SOCKET, outside systemd, it does nothing.
"""
import logging
import os
import re
import socket
from importlib import resources

from jinja2 import Environment, StrictUndefined

log = logging.getLogger("crmagi")

TEMPLATE = "crmagi.service.j2"
STATE_DIRECTORY = "/var/lib/crmagi"
DEFAULT_CONFIG = "/etc/crmagi/crmagi.ini"
HOME_TREES = ("/home", "/root", "/run/user")
# systemd's rule for user names it accepts in User= (and what useradd makes).
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def exec_word(value: str) -> str:
    """One word of a systemd command line: % and $ are specifiers/variables there, and a
    path with blanks or quotes must be double-quoted."""
    text = value.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', text):
        text = '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')
    return text


def _path_word(value: str) -> str:
    """A path in ReadWritePaths= (space-separated, specifiers expanded): no way to quote a blank."""
    if re.search(r"\s", value):
        raise ValueError("%r: a path with blanks cannot be listed in ReadWritePaths=" % value)
    return value.replace("%", "%%")


def render_unit(*, exec_path: str, config_path: str, user: str = "crmagi", spool: str = None,
                source: str = None) -> str:
    """The unit text.  ``spool``: the configured [agi] spool; a spool outside the state
    directory gets its directory added to ReadWritePaths (ProtectSystem=strict makes
    everything else read-only)."""
    if not _USER_NAME.match(user):
        raise ValueError("user %r: not a valid system user name (lower case, digits, _ and -)" % user)
    if not os.path.isabs(exec_path) or not os.path.isabs(config_path):
        raise ValueError("ExecStart needs absolute paths (got %r and %r)" % (exec_path, config_path))
    write_paths = [STATE_DIRECTORY]
    outside = spool_outside_state(spool)
    if outside:
        write_paths.append(_path_word(outside))
    text = resources.files("agi.ops").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False,
                      trim_blocks=True, lstrip_blocks=True)
    in_home = [path for path in _needed_paths(exec_path, config_path) if _under_home(path)]
    return env.from_string(text).render(
        exec_start=" ".join([exec_word(exec_path), "serve", "-c", exec_word(config_path)]),
        config=config_path, user=user, write_paths=write_paths, source=source or "",
        home_read_only=", ".join(in_home))


def _needed_paths(exec_path, config_path):
    """What the service must read: the executable, the Python its #! line names, the config."""
    paths = [exec_path, os.path.realpath(exec_path)]
    try:
        with open(exec_path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        interpreter = first[2:].split()[0].decode("utf-8", "replace") if first[2:].split() else ""
        if interpreter:
            paths += [interpreter, os.path.realpath(interpreter)]
    paths += [config_path, os.path.realpath(config_path)]
    return list(dict.fromkeys(paths))


def _under_home(path):
    """ProtectHome=yes hides these trees from the service entirely."""
    return any(path == top or path.startswith(top + "/") for top in HOME_TREES)


def spool_outside_state(spool):
    """The spool's directory when it is not under the state directory, else None."""
    if not spool:
        return None
    directory = os.path.dirname(os.path.abspath(spool))
    if directory == STATE_DIRECTORY or directory.startswith(STATE_DIRECTORY + "/"):
        return None
    return directory


def notify(message: str, environ=None) -> bool:
    """Send one sd_notify message (``READY=1``, ``STOPPING=1``, ``STATUS=...``).

    Returns True when it was sent.  A failure is logged, never raised: a service
    must not die because its supervisor's socket went away."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):          # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):    # vsock: addresses of VMs, not for us
        log.warning("NOTIFY_SOCKET %r: only unix sockets are supported; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", message.split("\n")[0], environ["NOTIFY_SOCKET"], exc)
        return False
    return True
