"""Junk peers for the live run: FastAGI and websocket clients that send junk, truncated and
stalled traffic, and AMI junk frames to interleave with a recorded stream.

Shared by tests/test_junk_traffic.py and bench/junk_traffic.py.  Junk never carries the ids
of a real call (uniqueids, channels and users are rewritten to ``junk`` ones): it must not
change the real calls, and a peer that spoofs a real call's ids is not junk but a forgery.
"""
import random
import re
import time

import gevent
from gevent import socket

import fuzz_strategies as fs
from agi.ami import amiproto
from fuzz_text_strategies import _frame
from webpush import auth

_ENV_IDS = re.compile(rb"^(agi_uniqueid|agi_channel|agi_threadid): .*$", re.M)
_IDS = re.compile(r"(Uniqueid|Linkedid|Channel|Interface)$")
_JUNK_EVENTS = (b"Newchannel", b"Newstate", b"Newexten", b"DialBegin", b"DialEnd", b"BridgeEnter", b"BridgeLeave",
                b"Hangup", b"VarSet", b"QueueCallerJoin", b"QueueCallerLeave", b"NewConnectedLine")
HANDSHAKE = ("GET /ws HTTP/1.1\r\nHost: crm\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: %s\r\n\r\n")


class Counter(dict):
    def add(self, key):
        self[key] = self.get(key, 0) + 1


def junk_env(rng, n):
    """A recorded env block under junk ids, mutated or not."""
    env = _ENV_IDS.sub(lambda m: m.group(1) + b": junk.%d" % n, rng.choice(fs.env_blocks()))
    for _ in range(rng.randint(0, 3)):
        env = fs.mutate_value(env, rng)
    return env


def agi_junk(address, rng, n, counts, hold=3.0):
    """One FastAGI connection of junk: what the server must drop (or answer) without harm."""
    kind = rng.choice(["mutated", "truncated", "stall", "random", "long_line", "junk_replies", "close"])
    counts.add("agi:" + kind)
    env = junk_env(rng, n)
    try:
        sock = socket.create_connection(address, timeout=5)
    except OSError:
        counts.add("agi:connect failed")
        return
    try:
        if kind == "truncated":
            sock.sendall(env[:rng.randrange(max(len(env) - 1, 1))])
        elif kind == "stall":
            sock.sendall(env[:rng.randrange(max(len(env) - 1, 1))])
            gevent.sleep(hold)              # the server's env timeout must let go of it
        elif kind == "random":
            sock.sendall(rng.randbytes(rng.randint(1, 4096)))
        elif kind == "long_line":
            sock.sendall(b"agi_network_script: " + b"x" * rng.randint(9000, 70000))
        elif kind in ("mutated", "junk_replies"):
            sock.sendall(env)
        if kind != "close":
            _answer_junk(sock, rng, hold, replies=kind == "junk_replies")
    except OSError:
        pass
    finally:
        sock.close()


def _answer_junk(sock, rng, hold, replies):
    """Read until the server closes; answer each command with junk (or say nothing)."""
    deadline = time.monotonic() + hold
    sock.settimeout(hold)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (OSError, socket.timeout):
            return
        if not data:
            return
        if replies:
            reply = rng.choice(fs.reply_streams())
            sock.sendall(fs.mutate_value(reply, rng)[:rng.randint(0, 400)])


def ws_junk(address, rng, n, counts, origin, secret, hold=3.0):
    """One websocket connection of junk: bad HTTP, half handshakes, junk frames, forged hellos."""
    kind = rng.choice(["http_junk", "half_handshake", "junk_frames", "truncated_frame", "forged_hello",
                       "junk_user", "huge_frame"])
    counts.add("ws:" + kind)
    try:
        sock = socket.create_connection(address, timeout=5)
    except OSError:
        counts.add("ws:connect failed")
        return
    handshake = (HANDSHAKE % origin).encode()
    try:
        if kind == "http_junk":
            sock.sendall(fs.mutate_value(handshake, rng))
        elif kind == "half_handshake":
            sock.sendall(handshake[:rng.randrange(len(handshake) - 4)])
            gevent.sleep(hold)
        else:
            sock.sendall(handshake)
            sock.sendall(_ws_payload(kind, rng, n, secret))
        _drain(sock, hold)
    except OSError:
        pass
    finally:
        sock.close()


def _ws_payload(kind, rng, n, secret):
    if kind == "junk_frames":
        return b"".join(_frame(rng.random() < 0.8, rng.choice([0, 0, 1]), rng.choice([1, 1, 2, 0, 8, 9, 3]), True,
                               rng.randbytes(rng.randint(0, 200)), 0) for _ in range(rng.randint(1, 8)))
    if kind == "truncated_frame":
        return _frame(True, 0, 1, True, b'{"type":"hello","token":"' + b"a" * 300, 0)[:rng.randint(2, 200)]
    if kind == "huge_frame":
        return b"\x81\xff" + (2 ** 62).to_bytes(8, "big") + b"\x00" * 4 + rng.randbytes(1000)
    if kind == "forged_hello":
        token = auth.mint("not-the-secret", "seed_sally_id", time.time(), 600)
    else:      # a valid token of a user the CRM does not know
        token = auth.mint(secret, "junk-user-%d" % n, time.time(), 600)
    hello = b'{"type":"hello","token":"%s","visible":true}' % token.encode()
    return _frame(True, 0, 1, True, hello, 0) + _frame(True, 0, 1, True, fs.mutate_value(hello, rng), 0)


def _drain(sock, hold):
    deadline = time.monotonic() + hold
    sock.settimeout(hold)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return
        except (OSError, socket.timeout):
            return


def ami_junk_frames(rng, n, count):
    """AMI frames to interleave with a real stream: lines without a header, header soup, and
    recorded channel events under junk ids (some cut short).  None carries a real call's ids."""
    recorded = [frame for stream in fs.ami_streams() for frame in amiproto.split_frames(stream)[0]
                if frame.startswith(b"Event: ") and frame[7:].split(b"\r\n")[0] in _JUNK_EVENTS]
    frames = []
    for i in range(count):
        kind = rng.choice(["no_header", "soup", "event", "cut_event"])
        if kind == "no_header":
            frames.append(rng.choice([b"garbage", b": no key", b"--END COMMAND--", rng.randbytes(40)])
                          .replace(b"\r\n\r\n", b"") or b"x")
        elif kind == "soup":
            frames.append(b"\r\n".join(b"%s: %s" % (rng.choice([b"Junk", b"Event", b"Foo", b"ActionID"]),
                                                   rng.randbytes(8).hex().encode()) for _ in range(5)))
        else:
            frame = _junk_ids(rng.choice(recorded), n * 1000 + i)
            if kind == "cut_event":
                lines = frame.split(b"\r\n")
                frame = b"\r\n".join(lines[:rng.randint(1, len(lines))])
            frames.append(frame)
    return frames


def _junk_ids(frame, n):
    lines = []
    for line in frame.split(b"\r\n"):
        key, sep, _ = line.partition(b": ")
        if sep and _IDS.search(key.decode("ascii", "replace")):
            line = key + b": Junk/junk.%d" % n
        lines.append(line)
    return b"\r\n".join(lines)


def interleave(events, junk, rng):
    """The real events in order, the junk frames scattered between them."""
    out = list(events)
    for frame in junk:
        out.insert(rng.randint(0, len(out)), frame)
    return out


def swarm(spawn_one, sockets, until, counts, rng_seed=7):
    """Keep ``sockets`` junk connections open at once until ``until()`` is true."""
    rng, n = random.Random(rng_seed), 0
    running = set()
    while not until():
        while len(running) < sockets:
            n += 1
            greenlet = gevent.spawn(spawn_one, random.Random(rng.random()), n, counts)
            running.add(greenlet)
            greenlet.link(running.discard)
        gevent.sleep(0.02)
    gevent.killall(list(running), timeout=5)
    return n
