"""What crmagi's calls cost the real Asterisk 22.10.1 of ../shared/peers (issue #12).

Starts the Asterisk peer in a temporary directory and this checkout's ``crmagi serve`` (one
worker, no AMI) on a ``generate.py`` database, then sends N ``Originate`` actions (async, at ``--rate`` per
second) into the fixture context ``load-in2``: the ``incoming`` FastAGI request, Answer,
Hangup, and the hangup handler's ``hangup`` request; the caller IDs are the sample file's
callers.  When no channel is left it prints the CPU seconds per call of the Asterisk
process and of crmagi, from /proc.  Each AGI command is a round trip that Asterisk's
channel thread serves, so what crmagi asks per call shows in Asterisk's own CPU.

    python bench/asterisk_cpu.py --database DB --samples FILE --calls 1000 --rate 50
"""
import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, cpu_seconds, free_port, start_server, stop_server  # noqa: E402

PEER = SHARED / "peers" / "asterisk"


class Peer:
    def __init__(self, agi_port):
        self.dir = Path(tempfile.mkdtemp(prefix="astcpu", dir="/tmp"))
        self.ami_port = free_port()
        subprocess.run(["bash", str(PEER / "start.sh"), str(self.dir), "--ami-port", str(self.ami_port),
                        "--agi-server", "127.0.0.1:%d" % agi_port], check=True, capture_output=True, timeout=300)
        self.pid = int((self.dir / "var/run/asterisk/asterisk.pid").read_text())

    def channels(self):
        out = subprocess.run([str(self.dir / "usr/sbin/asterisk"), "-C", str(self.dir / "etc/asterisk/asterisk.conf"),
                              "-rx", "core show channels count"], capture_output=True, text=True).stdout
        return int(out.split(" active channel")[0].split()[-1])

    def stop(self):
        subprocess.run(["bash", str(PEER / "stop.sh"), str(self.dir)], capture_output=True, timeout=60)


def originate(ami_port, numbers, calls, rate):
    sock = socket.create_connection(("127.0.0.1", ami_port))
    sock.recv(256)
    sock.sendall(b"Action: Login\r\nUsername: crm\r\nSecret: crmsecret\r\nEvents: off\r\n\r\n")
    sock.settimeout(0.5)
    started = time.monotonic()
    for i in range(calls):
        sock.sendall(("Action: Originate\r\nActionID: o%d\r\nChannel: Local/4930123400@load-in2\r\n"
                      "Application: Wait\r\nData: 0\r\nCallerID: <%s>\r\nAsync: true\r\n\r\n"
                      % (i, numbers[i % len(numbers)])).encode())
        _drain(sock)
        time.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
    return sock


def _drain(sock):
    sock.setblocking(False)
    try:
        while sock.recv(1 << 20):
            pass
    except (BlockingIOError, socket.timeout):
        pass
    finally:
        sock.settimeout(0.5)


def run(args):
    port = free_port()
    numbers = [s["caller"] for s in json.loads(Path(args.samples).read_text())["present"]]
    peer = Peer(port)
    serve, work = None, None
    try:
        serve, work = start_server("mysql+pymysql://root@127.0.0.1:3306/%s" % args.database, port,
                                   region=args.region, check=False)
        time.sleep(args.warmup)
        asterisk0, crmagi0, started = cpu_seconds(peer.pid), cpu_seconds(serve.pid), time.monotonic()
        ami = originate(peer.ami_port, numbers, args.calls, args.rate)
        time.sleep(1.0)
        while peer.channels():
            time.sleep(0.2)
        time.sleep(0.5)
        ami.close()
        asterisk1, crmagi1 = cpu_seconds(peer.pid), cpu_seconds(serve.pid)
        return {"calls": args.calls, "seconds": time.monotonic() - started,
                "asterisk_ms_per_call": (asterisk1 - asterisk0) / args.calls * 1e3,
                "crmagi_ms_per_call": (crmagi1 - crmagi0) / args.calls * 1e3, "serve_log": str(work / "serve.log")}
    finally:
        stop_server(serve)
        peer.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", required=True, help="a generate.py database with the phone index rebuilt")
    p.add_argument("--samples", required=True)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--region", default="DE")
    p.add_argument("--warmup", type=float, default=3.0)
    args = p.parse_args(argv)
    r = run(args)
    print("%d calls in %.1f s: Asterisk CPU %.2f ms per call, crmagi CPU %.2f ms per call (log: %s)"
          % (r["calls"], r["seconds"], r["asterisk_ms_per_call"], r["crmagi_ms_per_call"], r["serve_log"]))


if __name__ == "__main__":
    main()
