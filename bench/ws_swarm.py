"""Many idle browser tabs for the popup benchmark: N websockets logged in to crmagi's push server.

A minimal RFC 6455 client (handshake, masked text frames, unmasked server frames),
so 10,000 sockets fit in one gevent process.  Each socket logs in as its own
user (``swarm-<i>``) with a valid token and pings every 25 s like popup.js.
Prints ``ready <n>`` when all are in, then ``popup <n>`` lines if any of them
is ever sent a popup (none should: they are other users).

    python bench/ws_swarm.py --url ws://127.0.0.1:8089/ws --origin http://127.0.0.1:8000 \
        --secret S --count 10000
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402

from webpush import auth  # noqa: E402

PING_EVERY = 25.0


def frame(text):
    """One masked text frame, as browsers must send."""
    payload, mask = text.encode("utf-8"), os.urandom(4)
    length = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(sock):
    """(opcode, payload) of one unmasked server frame."""
    first, second = read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(sock, 8))[0]
    return first & 0x0F, read_exact(sock, length)


def handshake(sock, host, port, origin):
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nOrigin: %s\r\n\r\n"
                  % (host, port, key, origin)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1024)
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())


class Swarm:
    def __init__(self, url, origin, secret, user_prefix="swarm-"):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.origin, self.secret, self.prefix = origin, secret, user_prefix
        self.ready = 0
        self.popups = 0
        self.failed = 0

    def tab(self, index, all_in, gate):
        with gate:
            sock = self._login(index)
        self.ready += 1
        sock.settimeout(None)
        gevent.spawn(self._ping, sock)
        all_in.wait()
        self._listen(sock)

    def _login(self, index):
        sock = socket.create_connection((self.host, self.port), timeout=30)
        try:
            handshake(sock, self.host, self.port, self.origin)
            token = auth.mint(self.secret, "%s%d" % (self.prefix, index), time.time(), 3600)
            sock.sendall(frame(json.dumps({"type": "hello", "token": token, "tab": str(index),
                                           "visible": True, "focused": True})))
            opcode, payload = read_frame(sock)
            if json.loads(payload).get("type") != "welcome":
                raise ConnectionError(payload.decode()[:100])
        except Exception:
            self.failed += 1
            sock.close()
            raise
        return sock

    def _ping(self, sock):
        gevent.sleep(random.uniform(0, PING_EVERY))    # real tabs were opened at different times
        while True:
            gevent.sleep(PING_EVERY)
            sock.sendall(frame('{"type":"ping"}'))

    def _listen(self, sock):
        while True:
            opcode, payload = read_frame(sock)
            if opcode == 1 and b'"popup"' in payload:
                self.popups += 1
                print("popup %d" % self.popups, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight at once")
    args = parser.parse_args()
    swarm, all_in = Swarm(args.url, args.origin, args.secret), gevent.event.Event()
    gate = BoundedSemaphore(args.concurrency)
    greenlets = [gevent.spawn(swarm.tab, i, all_in, gate) for i in range(args.count)]
    while swarm.ready + swarm.failed < args.count:
        gevent.sleep(0.1)
    print("ready %d failed %d" % (swarm.ready, swarm.failed), flush=True)
    all_in.set()
    sys.stdin.read()           # until the benchmark closes our stdin
    gevent.killall(greenlets, timeout=1)


if __name__ == "__main__":
    main()
