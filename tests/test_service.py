"""Running as a service: the systemd unit, sd_notify, and `crmagi serve` stopped by SIGTERM.

The unit is checked line by line against a golden file and by systemd's own
parser (`systemd-analyze verify`, `security --offline`); `crmagi serve` runs as
a real subprocess, under the kernel's MemoryDenyWriteExecute (PR_SET_MDWE) too.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import gevent
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from agi.ops import systemd
from agi.demo.asterisk_commands import answer
from agi.cli import main
from agi.fastagi.protocol import parse_env
from agi.demo.simulator import SimulatedCall, env_block
from fake_ami import FakeAmi

GOLDEN = Path(__file__).parent / "golden" / "crmagi.service"
PATSY_NUMBER = "0330977089"        # sample contact Patsy Beauchesne, phone_work (033) 097-7089
HARDENING = ["NoNewPrivileges=yes", "CapabilityBoundingSet=", "ProtectSystem=strict", "ProtectHome=yes",
             "PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
             "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
             "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictNamespaces=yes",
             "LockPersonality=yes", "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service",
             "UMask=0077", "ReadWritePaths=/var/lib/crmagi"]


def unit(*args):
    result = CliRunner().invoke(main, ["systemd-unit", *args])
    assert result.exit_code == 0, result.output
    return result


def lines(text_):
    return text_.splitlines()


# -- the unit ---------------------------------------------------------------------------

def test_unit_matches_golden():
    result = unit("-c", "/etc/crmagi/crmagi.ini", "--exec", "/opt/crmagi/bin/crmagi")
    assert result.stdout == GOLDEN.read_text()


def test_unit_key_lines_and_flags_applied():
    out = lines(unit("-c", "/srv/pbx/crm.ini", "--user", "pbxcrm", "--exec", "/opt/x/bin/crmagi").stdout)
    exec_start = [line for line in out if line.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/opt/x/bin/crmagi serve -c /srv/pbx/crm.ini"]
    for line in ["User=pbxcrm", "Group=pbxcrm", "Type=notify", "NotifyAccess=main", "StateDirectory=crmagi",
                 "Restart=on-failure", "RestartSec=2", "KillSignal=SIGTERM", "KillMode=mixed",
                 "TimeoutStopSec=45"] + HARDENING:
        assert line in out, line
    assert "User=crmagi" not in out


def test_relative_config_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = lines(unit("-c", "crmagi.ini", "--exec", "/opt/x/bin/crmagi").stdout)
    assert "ExecStart=/opt/x/bin/crmagi serve -c %s/crmagi.ini" % tmp_path in out


def test_exec_words_are_quoted_for_systemd():
    assert systemd.exec_word("/opt/my crm/bin/crmagi") == '"/opt/my crm/bin/crmagi"'
    assert systemd.exec_word("/etc/crm%i/$HOME.ini") == "/etc/crm%%i/$$HOME.ini"


def test_spool_outside_the_state_directory_is_made_writable_with_a_warning(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[agi]\nspool = /srv/crmagi/spool.sqlite\n")
    result = unit("-c", str(ini), "--exec", "/opt/x/bin/crmagi")
    assert "ReadWritePaths=/var/lib/crmagi /srv/crmagi" in lines(result.stdout)
    assert "WARNING [agi] spool = /srv/crmagi/spool.sqlite is outside /var/lib/crmagi" in result.stderr
    ini.write_text("[agi]\nspool = /var/lib/crmagi/spool.sqlite\n")
    result = unit("-c", str(ini), "--exec", "/opt/x/bin/crmagi")
    assert "ReadWritePaths=/var/lib/crmagi" in lines(result.stdout) and not result.stderr


def test_crmagi_in_a_home_directory_gets_protecthome_read_only(tmp_path):
    out = lines(unit("--exec", "/root/venv/bin/crmagi").stdout)
    assert "ProtectHome=read-only" in out and "ProtectHome=yes" not in out
    script = tmp_path / "crmagi"      # not under a home, but its #! Python is
    script.write_text("#!/home/ops/venv/bin/python3\n")
    out = lines(unit("--exec", str(script)).stdout)
    assert "ProtectHome=read-only" in out


def test_bad_user_is_refused():
    result = CliRunner().invoke(main, ["systemd-unit", "--exec", "/opt/x/bin/crmagi", "--user", "Root;rm"])
    assert result.exit_code == 1 and "not a valid system user name" in result.output


def test_systemd_accepts_the_unit_and_rates_it(tmp_path):
    """systemd's own parser: no warnings, and the exposure score of `systemd-analyze security`."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (apt-get install systemd; .ci/run installs it)"
    binary = tmp_path / "my bin" / "crmagi"        # a blank in the path: quoting as systemd reads it
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    service = tmp_path / "crmagi.service"
    service.write_text(systemd.render_unit(exec_path=str(binary), config_path="/etc/crmagi/crmagi.ini"))
    verify = subprocess.run([analyze, "verify", str(service)], capture_output=True, text=True, cwd=tmp_path)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(service)],
                              capture_output=True, text=True, cwd=tmp_path)
    score = re.search(r"Overall exposure level for crmagi\.service: ([0-9.]+)", security.stdout)
    assert score, security.stdout + security.stderr
    assert float(score.group(1)) <= 2.0, security.stdout


# -- sd_notify ----------------------------------------------------------------------------

@pytest.fixture
def notify_socket():
    """A datagram socket where systemd would listen, in the abstract namespace (no path limit)."""
    name = "crmagi-test-%s" % uuid.uuid4().hex
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(30)
    yield "@" + name, sock
    sock.close()


def test_notify_sends_one_datagram(notify_socket, tmp_path):
    address, sock = notify_socket
    assert systemd.notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": address})
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path:
        by_path.bind(path)
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": path})
        assert by_path.recv(4096) == b"STOPPING=1"


def test_notify_without_systemd_does_nothing_and_never_raises(tmp_path, caplog):
    assert systemd.notify("READY=1", {}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert "sd_notify READY=1" in caplog.text


# -- crmagi serve as systemd runs it ------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Run the command with the kernel's MemoryDenyWriteExecute (what systemd >= 256 uses for
# MemoryDenyWriteExecute=yes; older ones install the equivalent seccomp filter), after
# checking that a writable+executable mapping is really refused.
MDWE_WRAPPER = """
import ctypes, mmap, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: MDWE not in force")
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


def start_serve(ini, notify_address, mdwe=False):
    cmd = [sys.executable, "-m", "agi.cli", "serve", "-c", str(ini)]
    if mdwe:
        cmd = [sys.executable, "-c", MDWE_WRAPPER] + cmd
    env = dict(os.environ, NOTIFY_SOCKET=notify_address)
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)


def wait_message(sock, prefix):
    while True:
        message = sock.recv(4096).decode()
        if message.startswith(prefix):
            return message


def refused(address):
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_the_running_agi_session_then_exits_0(crm_url, tmp_path, notify_socket):
    address, notices = notify_socket
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    # Every port its own: another crmagi on this box holding the default [metrics] port made the
    # start fail (a port in use stops it).
    ini.write_text("[crm]\nurl = %s\n[agi]\nlisten = 127.0.0.1:%d\ntimeout = 3\nspool = %s\n"
                   "[metrics]\nlisten = 127.0.0.1:%d\n" % (crm_url, port, tmp_path / "spool.sqlite", free_port()))
    proc = start_serve(ini, address)
    try:
        assert wait_message(notices, "READY=1").startswith("READY=1\nSTATUS=FastAGI on 127.0.0.1:%d" % port)
        call = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400", callerid=PATSY_NUMBER)
        chan = call.channel
        env = env_block("incoming", port=port, channel=chan.name, uniqueid=call.uniqueid,
                        callerid=PATSY_NUMBER, context="crmagi-inbound", extension="s", priority=3,
                        args=["4930123400"])
        chan.env = parse_env(env)[0]
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(env)
        reader = sock.makefile("rb")
        line = reader.readline()                # crmagi is now inside the session, waiting for us
        assert line
        proc.send_signal(signal.SIGTERM)
        assert wait_message(notices, "STOPPING=1") == "STOPPING=1\nSTATUS=draining"
        while not refused(("127.0.0.1", port)):   # it stopped accepting ...
            pass
        variables = {}
        while line:                              # ... yet the running session goes on to its end
            sock.sendall(answer(chan, line, {}, variables))
            line = reader.readline()
        sock.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert variables["CRM_STATUS"] == "found"
    engine = create_engine(crm_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT parent_type, status FROM calls WHERE id=:id"),
                           {"id": variables["CRM_CALL_ID"]}).one()
    engine.dispose()
    assert tuple(row) == ("Contacts", "Planned")


def test_serve_with_ami_and_popups_under_memory_deny_write_execute(crm_url, tmp_path, notify_socket):
    address, notices = notify_socket
    ami = FakeAmi(secret="s3cret-ami").start()
    port, web_port = free_port(), free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\nsite_url = https://crm.example.com/\n"
                   "[agi]\nlisten = 127.0.0.1:%d\ntimeout = 3\nspool = %s\n"
                   "[ami]\nhost = 127.0.0.1\nport = %d\nusername = crm\nsecret = s3cret-ami\n"
                   "[webpush]\nlisten = 127.0.0.1:%d\nsecret = %s\n[metrics]\nlisten = 127.0.0.1:%d\n"
                   % (crm_url, port, tmp_path / "spool.sqlite", ami.port, web_port, "k" * 32, free_port()))
    proc = start_serve(ini, address, mdwe=True)
    try:
        wait_message(notices, "READY=1")
        first, last = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400",
                                    callerid=PATSY_NUMBER).run(dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "7"})
        assert first.variables["CRM_STATUS"] == "found" and last.agistatus == "SUCCESS"
        socket.create_connection(("127.0.0.1", web_port), timeout=5).close()     # popup server is up
        while not any(a.get("Action") == "Login" for a in ami.actions):   # AMI logs in on its own
            gevent.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        errors = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ami.stop()
    assert "Traceback" not in errors and "logged in" in errors, errors
    engine = create_engine(crm_url)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM calls WHERE id=:id"),
                              {"id": first.variables["CRM_CALL_ID"]}).scalar()
    engine.dispose()
    assert status == "Held", errors
