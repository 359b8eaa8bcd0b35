"""CPU of one FastAGI session's dialogue in crmagi's server, without lookup or writes (issue #12).

A client process plays Asterisk (the env block, then one reply per command line, as
res_agi.c answers), N sessions one after another; the server runs, in this process,
either crmagi's FastAgiServer with a handler that sends what ``incoming`` sent for a found
caller until the seventh session of 2026-12-07 (GET FULL VARIABLE of the linkedid, nine SET
VARIABLEs; it now sets them with one ARRAY() command), kept as a fixed 10-command dialogue, or the
same ten commands on a bare gevent StreamServer.  Server CPU per session (getrusage) is the floor that the
dialogue alone costs on this box: each command is a loopback round trip and a wake-up of
the event loop.

    python bench/agi_session.py --sessions 3000
"""
import argparse
import multiprocessing
import resource
import socket
import time

from common import frames

ENV = b"".join(b"agi_%s: %s\n" % pair for pair in (
    (b"network_script", b"incoming"), (b"callerid", b"+4930123"), (b"uniqueid", b"1.1"),
    (b"channel", b"PJSIP/trunk-00000001"))) + b"\n"
COMMANDS = 10


def asterisk(port, sessions):
    """The client: every command line gets ``200 result=1`` (with the linkedid for the GET)."""
    for _ in range(sessions):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(ENV)
        for line in frames(sock, b"\n", 4096):
            sock.sendall(b"200 result=1 (1.1)\n" if line.startswith(b"GET") else b"200 result=1\n")
        sock.close()


def crmagi_server():
    from agi.fastagi.server import FastAgiServer, Router

    def incoming(session, flow, accepted_at):
        session.get_full_variable("${CHANNEL(linkedid)}")
        for k in range(COMMANDS - 1):
            session.set_variable("CRM_VAR%d" % k, "value %d" % k)
    server = FastAgiServer(("127.0.0.1", 0), Router({"incoming": incoming}), None)
    server.start()
    return server.address[1]


def bare_server():
    from gevent.server import StreamServer

    def handle(sock, address):
        buf = b""
        while b"\n\n" not in buf:
            buf += sock.recv(65536)
        sock.sendall(b'GET FULL VARIABLE "${CHANNEL(linkedid)}"\n')
        sock.recv(65536)
        for k in range(COMMANDS - 1):
            sock.sendall(b'SET VARIABLE CRM_VAR%d "value %d"\n' % (k, k))
            sock.recv(65536)
        sock.close()
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server.address[1]


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(kind, sessions):
    import gevent

    port = crmagi_server() if kind == "crmagi" else bare_server()
    (user0, sys0), started = _cpu(), time.monotonic()
    client = multiprocessing.get_context("spawn").Process(target=asterisk, args=(port, sessions))
    client.start()
    while client.is_alive():
        gevent.sleep(0.05)
    user1, sys1 = _cpu()
    return {"server": kind, "sessions": sessions, "us_per_session": (user1 - user0 + sys1 - sys0) / sessions * 1e6,
            "user_us": (user1 - user0) / sessions * 1e6, "sys_us": (sys1 - sys0) / sessions * 1e6,
            "wall_s": time.monotonic() - started}


def main(argv=None):
    from gevent import monkey

    monkey.patch_all()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=3000)
    p.add_argument("--only", choices=("crmagi", "bare"), help="one server only (bench/instructions.py)")
    args = p.parse_args(argv)
    for kind in [args.only] if args.only else ("crmagi", "bare"):
        r = measure(kind, args.sessions)
        print("%-7s %d sessions of %d commands: server CPU %.0f us per session (user %.0f, sys %.0f), %.1f s"
              % (kind, r["sessions"], COMMANDS, r["us_per_session"], r["user_us"], r["sys_us"], r["wall_s"]))


if __name__ == "__main__":
    main()
