"""pyst2's asterisk.manager.Manager versus crmagi's AmiClient on the same recorded AMI stream.

A local server sends the banner, accepts the Login, then every event of every
recording in shared/fixtures/asterisk, --repeat times; each client counts the
events it hands to its handler.  Reported: events/s and CPU seconds per 10k
events, plus what each client does when the server restarts (reconnect?).

    python bench/ami_clients.py --repeat 20
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agi.ami import amiproto  # noqa: E402
from agi.ami.amiclient import AmiClient  # noqa: E402
from common import SHARED  # noqa: E402


def recorded_events():
    events = []
    for path in sorted(glob.glob(str(SHARED / "fixtures" / "asterisk" / "*.ami.txt"))):
        _, rest = amiproto.split_banner(open(path, "rb").read())
        frames, _ = amiproto.split_frames(rest)
        events += [f + b"\r\n\r\n" for f in frames if f.startswith(b"Event: ")]
    return events


def serve(events, repeat):
    payload = b"".join(events) * repeat

    def handle(sock, _address):
        sock.sendall(b"Asterisk Call Manager/11.0.0\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        aid = amiproto.parse_frame(data.split(b"\r\n\r\n")[0]).get("ActionID", "")
        sock.sendall(("Response: Success\r\nActionID: %s\r\nMessage: Authentication accepted\r\n\r\n"
                      % aid).encode())
        sock.sendall(payload)
        gevent.sleep(30)
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


def run_crmagi(port, expected):
    count = [0]

    class Handler:
        def on_event(self, _message):
            count[0] += 1
    cpu, start = time.process_time(), time.monotonic()
    client = AmiClient("127.0.0.1", port, "crm", "x", Handler(), ping_interval=60).start()
    while count[0] < expected and time.monotonic() - start < 120:
        gevent.sleep(0.01)
    result = (count[0], time.monotonic() - start, time.process_time() - cpu)
    client.stop()
    return result


def run_pyst2(port, expected):
    from asterisk.manager import Manager

    count = [0]
    manager = Manager()
    cpu, start = time.process_time(), time.monotonic()
    manager.connect("127.0.0.1", port)
    manager.register_event("*", lambda event, mgr: count.__setitem__(0, count[0] + 1))
    manager.login("crm", "x")
    while count[0] < expected and time.monotonic() - start < 120:
        gevent.sleep(0.01)
    result = (count[0], time.monotonic() - start, time.process_time() - cpu)
    try:
        manager.close()
    except Exception:
        pass
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    events = recorded_events()
    expected = len(events) * args.repeat
    print("%d events (%d recorded x %d)" % (expected, len(events), args.repeat))
    for name, runner in (("crmagi AmiClient", run_crmagi), ("pyst2 Manager", run_pyst2)):
        server = serve(events, args.repeat)
        got, wall, cpu = runner(server.address[1], expected)
        server.stop(timeout=0)
        print("%-18s %7d events in %6.2f s = %8.0f events/s, %.2f CPU s per 10k events"
              % (name, got, wall, got / wall if wall else 0, cpu / max(got, 1) * 10000))


if __name__ == "__main__":
    main()
