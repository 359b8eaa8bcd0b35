"""The real Asterisk 22.10.1 of ../shared/peers, started for a test in a short temp dir.

It runs the fixture dialplan; ``add_dialplan`` appends crmagi's include (or any text)
to its extensions.conf and reloads.  A missing peer fails the test: it never skips.
"""
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import SHARED

PEERS = SHARED / "peers" / "asterisk"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AsteriskPeer:
    def __init__(self, agi_port, ami_port=None):
        assert (PEERS / "start.sh").exists(), "Asterisk peer missing: %s" % PEERS
        self.dir = Path(tempfile.mkdtemp(prefix="ast", dir="/tmp"))
        self.ami_port = ami_port or free_port()
        self.agi_port = agi_port
        subprocess.run(["bash", str(PEERS / "start.sh"), str(self.dir), "--ami-port", str(self.ami_port),
                        "--agi-server", "127.0.0.1:%d" % agi_port], check=True, capture_output=True,
                       timeout=300)

    def cli(self, command):
        return subprocess.run([str(self.dir / "usr/sbin/asterisk"), "-C",
                               str(self.dir / "etc/asterisk/asterisk.conf"), "-rx", command],
                              check=True, capture_output=True, text=True, timeout=30).stdout

    def add_dialplan(self, text):
        with open(self.dir / "etc/asterisk/extensions.conf", "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
        self.cli("dialplan reload")

    def astdb(self, family):
        """{key: value} of one AstDB family, from `database show`."""
        entries = {}
        for line in self.cli("database show %s" % family).splitlines():
            path, sep, value = line.partition(":")
            if sep and path.strip().startswith("/%s/" % family):
                entries[path.strip()[len(family) + 2:]] = value.strip()
        return entries

    def wait_channels_gone(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "0 active channels" in self.cli("core show channels count"):
                return
            time.sleep(0.2)
        raise AssertionError("channels still up: %s" % self.cli("core show channels"))

    def stop(self):
        subprocess.run(["bash", str(PEERS / "stop.sh"), str(self.dir)], capture_output=True, timeout=60)
