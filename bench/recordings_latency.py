"""Recordings: how long a page waits for its players, and the audio for its bytes.

    python3 -m bench.recordings_latency [--calls 20] [--rounds 50]

In one process: the popup server with ``/recordings`` on port 0, a SuiteCRM database in
the local MariaDB with ``--calls`` Calls of one user, each with a 40 s 8 kHz PCM WAV
(640 KB, what MixMonitor writes) in a local store, and the same folder behind Debian's
nginx for the remote store.  Measured, p50 / p95 over ``--rounds``:
the websocket ``recordings`` answer for a page of ``--calls`` Calls; a whole file and a
seek (``Range: bytes=N-`` from the middle) to the last byte; the first play of a GSM and
a WAV49 recording (sox) and a second play from the conversion cache.
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from datetime import datetime, timezone
from pathlib import Path

from gevent import monkey

monkey.patch_all()

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import sqlalchemy  # noqa: E402
import websocket  # noqa: E402

from bench.common import create_database, drop_database  # noqa: E402
from crmsync.access import RecordAccess  # noqa: E402
from crmsync.calls import CallStore  # noqa: E402
from crmsync.models import User  # noqa: E402
from webpush import auth  # noqa: E402
from webpush.bus import LocalBus  # noqa: E402
from webpush.hub import Hub  # noqa: E402
from webpush.popups import PopupBook  # noqa: E402
from webpush.recordings import Recordings  # noqa: E402
from webpush.recstore import LocalStore, RemoteStore  # noqa: E402
from webpush import server as server_module  # noqa: E402
from webpush.server import PushServer  # noqa: E402
from webpush.service import PopupService  # noqa: E402
from webpush.transcode import Transcoder  # noqa: E402

SECRET, ORIGIN, USER = "bench-secret-0123456789abcdef", "http://crm.bench", "seed_sally_id"


class _Directory:
    def user(self, user_id):
        return User(user_id, "sally", "Sally", "101")

    def user_by_extension(self, ext):
        return None


def _tone(path, seconds=40, rate=8000):
    frames = b"".join((8000 if (i * 880 // rate) % 2 else -8000).to_bytes(2, "little", signed=True)
                      for i in range(seconds * rate))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate), out.writeframes(frames)


def _calls(engine, names):
    ids, now = [], datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        for name in names:
            ids.append(str(uuid.uuid4()))
            conn.exec_driver_sql("INSERT INTO calls (id, name, date_entered, date_modified, deleted, assigned_user_id,"
                                 " status, date_start) VALUES (%s, 'bench', %s, %s, 0, %s, 'Held', %s)",
                                 (ids[-1], now, now, USER, now))
            conn.exec_driver_sql("INSERT INTO crmagi_calls (call_id, recording) VALUES (%s, %s)", (ids[-1], name))
    return ids


def _ms(samples):
    ordered = sorted(samples)
    return "p50 %.1f ms, p95 %.1f ms" % (statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.95) - 1] * 1e3)


def _timed(func, rounds):
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        out.append(time.perf_counter() - start)
    return out


def _get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status in (200, 206), (response.status, body[:200])
    return body


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="recbench"))
    store = tmp / "monitor"
    store.mkdir()
    _tone(store / "call.wav")
    names = ["call-%d.wav" % i for i in range(args.calls)]
    for name in names:
        os.link(store / "call.wav", store / name)
    subprocess.run(["sox", str(store / "call.wav"), "-t", "gsm", str(store / "call.gsm")], check=True)
    subprocess.run(["sox", str(store / "call.wav"), "-t", "wav", "-e", "gsm-full-rate", str(store / "call.WAV")],
                   check=True)
    database, url = create_database("crmagi_recbench_")
    engine = sqlalchemy.create_engine(url)
    try:
        CallStore(engine).ensure_tables()
        ids = _calls(engine, names)
        gsm, wav49 = _calls(engine, ["call.gsm", "call.WAV"])
        recordings = Recordings(SECRET, RecordAccess(engine), LocalStore(str(store)),
                                Transcoder(str(tmp / "cache"), 100_000_000), str(store))
        server_module.RATE = server_module.BURST = 10 ** 6    # one tab asking many times: no flood limit
        hub = Hub()
        service = PopupService(PopupBook(hub, None, pending_seconds=40), _Directory(), LocalBus(), None,
                               lambda system, linkedid: linkedid).start()
        server = PushServer(("127.0.0.1", 0), SECRET, (ORIGIN,), service, hub, _Directory(),
                            recordings=recordings).start()
        port = server.address[1]
        ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % port, origin=ORIGIN, timeout=30)
        ws.send(json.dumps({"type": "hello", "token": auth.mint(SECRET, USER, time.time(), 600), "tab": "b"}))
        json.loads(ws.recv())

        def ask():
            ws.send(json.dumps({"type": "recordings", "calls": ids}))
            while True:
                reply = json.loads(ws.recv())
                if reply["type"] == "recordings":
                    assert len(reply["items"]) == len(ids) and all("url" in i for i in reply["items"]), reply
                    return reply["items"]

        items = ask()
        print("page of %d Calls, websocket answer (local store): %s" % (args.calls, _ms(_timed(ask, args.rounds))))
        path = items[0]["url"]
        print("whole 40 s WAV (640 KB): %s" % _ms(_timed(lambda: _get(port, path), args.rounds)))
        print("seek, Range from the middle (320 KB): %s"
              % _ms(_timed(lambda: _get(port, path, {"Range": "bytes=320044-"}), args.rounds)))
        for label, call in (("GSM", gsm), ("WAV49", wav49)):
            ws.send(json.dumps({"type": "recordings", "calls": [call]}))
            reply = json.loads(ws.recv())
            first = _timed(lambda: _get(port, reply["items"][0]["url"]), 1)[0]
            cached = _timed(lambda: _get(port, reply["items"][0]["url"]), args.rounds)
            print("40 s %s: first play (sox) %.0f ms, then from the cache %s" % (label, first * 1e3, _ms(cached)))
        from nginx_peer import Nginx, available
        from peer_asterisk import free_port

        if available():
            nginx = Nginx(store, free_port())
            try:
                recordings.store = RemoteStore(nginx.url, timeout=5)
                ask()       # the HEAD answers are cached 30 s: measure the streaming, then a fresh page
                print("remote (nginx): whole 40 s WAV %s; seek %s" % (
                    _ms(_timed(lambda: _get(port, path), args.rounds)),
                    _ms(_timed(lambda: _get(port, path, {"Range": "bytes=320044-"}), args.rounds))))

                def fresh_page():
                    recordings.store = RemoteStore(nginx.url, timeout=5)
                    ask()
                print("remote (nginx): page of %d Calls, no HEAD cached: %s"
                      % (args.calls, _ms(_timed(fresh_page, args.rounds))))
            finally:
                nginx.stop()
        ws.close()
        server.stop()
        service.stop()
    finally:
        engine.dispose()
        drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
