"""Tier b: the FastAGI server shell against hostile or broken peers on loopback.

Bad input costs one log line and that connection only; other calls go on.
"""
import logging
import socket
import time

import gevent
import pytest

from agi.fastagi.server import FastAgiServer, Router

ENV = (b"agi_network: yes\nagi_network_script: %s\nagi_request: agi://127.0.0.1:4573/%s\n"
       b"agi_channel: PJSIP/trunk-00000001\nagi_uniqueid: 1795699120.1\nagi_version: 22.10.1\n"
       b"agi_callerid: +4930111111\nagi_calleridname: unknown\nagi_arg_1: 4930123400\n\n")


def env(script=b"echo"):
    return ENV % (script, script)


def _echo(session, flow, accepted_at):
    """Asks Asterisk one thing and stores what it heard."""
    value = session.get_variable("CALLERID(num)")
    session.set_variable("SEEN", value)


def _boom(session, flow, accepted_at):
    raise RuntimeError("handler bug")


@pytest.fixture
def server():
    srv = FastAgiServer(("127.0.0.1", 0), Router({"echo": _echo, "boom": _boom}), flow=None,
                        env_timeout=0.3, reply_timeout=0.3, max_sessions=50)
    srv.start()
    yield srv
    srv.stop(timeout=1)


def connect(server):
    sock = socket.create_connection(server.address, timeout=3)
    return sock


def read_until_closed(sock, limit=3.0):
    """Everything the server sends until it closes; fails the test if it never does."""
    sock.settimeout(limit)
    data = b""
    started = time.monotonic()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def good_call(server):
    """A well-behaved Asterisk: answers each command, one at a time."""
    sock = connect(server)
    sock.sendall(env())
    sock.settimeout(2)
    f = sock.makefile("rb")
    assert f.readline() == b"GET VARIABLE CALLERID(num)\n"
    sock.sendall(b"200 result=1 (+4930111111)\n")
    assert f.readline() == b'SET VARIABLE SEEN "+4930111111"\n'
    sock.sendall(b"200 result=1\n")
    assert f.readline() == b""        # the server closed: the dialplan goes on
    sock.close()


def test_good_session(server):
    good_call(server)


def test_unsolicited_hangup_between_replies_is_skipped(server):
    sock = connect(server)
    sock.sendall(env())
    f = sock.makefile("rb")
    assert f.readline() == b"GET VARIABLE CALLERID(num)\n"
    sock.sendall(b"HANGUP\n")
    gevent.sleep(0.05)
    sock.sendall(b"200 result=1 (+4930111111)\n")
    assert f.readline() == b'SET VARIABLE SEEN "+4930111111"\n'


@pytest.mark.parametrize("junk", [
    b"GET / HTTP/1.1\r\nHost: crm\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)) + b"\n\n",
    b"\n",
    b"agi_network_script: echo\nnot an env line\n\n",
])
def test_junk_is_dropped_and_server_lives(server, junk, caplog):
    caplog.set_level(logging.WARNING, "crmagi.agi")
    sock = connect(server)
    sock.sendall(junk)
    data, elapsed = read_until_closed(sock)
    assert data == b"" and elapsed < 1.0
    assert any("dropped" in r.getMessage() for r in caplog.records)
    good_call(server)


def test_half_sent_env_times_out(server, caplog):
    caplog.set_level(logging.WARNING, "crmagi.agi")
    sock = connect(server)
    sock.sendall(b"agi_network: yes\nagi_network_script: echo\n")
    data, elapsed = read_until_closed(sock)
    assert data == b"" and 0.2 < elapsed < 1.5
    assert any("incomplete AGI environment" in r.getMessage() for r in caplog.records)


def test_one_megabyte_line_is_refused(server, caplog):
    caplog.set_level(logging.WARNING, "crmagi.agi")
    sock = connect(server)
    try:
        sock.sendall(b"agi_network_script: " + b"x" * 1_000_000 + b"\n\n")
    except (BrokenPipeError, ConnectionResetError):
        pass              # the server may close while we are still sending: that is the point
    data, elapsed = read_until_closed(sock)
    assert data == b"" and elapsed < 1.5
    assert any("longer than" in r.getMessage() or "larger than" in r.getMessage() for r in caplog.records)
    good_call(server)


def test_peer_that_stalls_mid_session_is_dropped(server, caplog):
    caplog.set_level(logging.WARNING, "crmagi.agi")
    sock = connect(server)
    sock.sendall(env())
    f = sock.makefile("rb")
    assert f.readline() == b"GET VARIABLE CALLERID(num)\n"
    started = time.monotonic()
    assert f.readline() == b""           # never answered: the server gives up after reply_timeout
    assert time.monotonic() - started < 1.5
    assert any("no data" in r.getMessage() for r in caplog.records)


def test_stalled_peers_do_not_block_others(server):
    stalled = [connect(server) for _ in range(20)]
    for sock in stalled:
        sock.sendall(b"agi_network: yes\n")
    good_call(server)
    for sock in stalled:
        sock.close()


def test_unknown_script_and_handler_crash_are_logged(server, caplog):
    caplog.set_level(logging.INFO, "crmagi.agi")
    for script in (b"nosuch", b"boom"):
        sock = connect(server)
        sock.sendall(env(script))
        data, _ = read_until_closed(sock)
        assert data == b""
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "unknown script 'nosuch'" in messages and "1795699120.1" in messages
    assert "boom (uniqueid 1795699120.1)" in messages
    good_call(server)


def test_duplicate_route_is_a_startup_error():
    router = Router({"echo": _echo})
    with pytest.raises(ValueError, match="defined twice"):
        router.add("echo", _boom)


class _ShortWrites:
    """A socket whose send() takes at most 4 bytes, as a full send buffer would."""

    def __init__(self, replies):
        self.replies, self.sent, self.sendall_calls = list(replies), b"", 0

    def send(self, data):
        self.sent += bytes(data[:4])
        return min(4, len(data))

    def sendall(self, data):
        self.sendall_calls += 1
        self.sent += bytes(data)

    def settimeout(self, _):
        pass

    def recv(self, _):
        return self.replies.pop(0) if self.replies else b""


def test_a_command_cut_short_by_a_full_send_buffer_is_sent_whole():
    from agi.fastagi.session import AgiSession

    sock = _ShortWrites([b"200 result=1 (x)\n"])
    assert AgiSession(sock, reply_timeout=1).get_variable("CALLERID(num)") == "x"
    assert sock.sent == b"GET VARIABLE CALLERID(num)\n" and sock.sendall_calls == 1
