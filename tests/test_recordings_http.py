"""/recordings over real sockets: the popup server, a real SuiteCRM database, files on disk,
sox and Debian's nginx as the PBX's web server."""
import http.client
import json
import os
import shutil
import subprocess
import time
import uuid
import wave
from datetime import datetime

import pytest
import sqlalchemy
import websocket

from conftest import missing
from crmsync.access import RecordAccess
from crmsync.calls import CallStore
from crmsync.models import User
from nginx_peer import Nginx, available as nginx_available
from peer_asterisk import free_port
from webpush import recording_urls
from webpush.bus import LocalBus
from webpush.hub import Hub
from webpush.popups import PopupBook
from webpush.recordings import NOT_AVAILABLE, Recordings
from webpush.recstore import LocalStore, RemoteStore
from webpush.server import PushServer
from webpush.service import PopupService
from webpush.transcode import Transcoder
from test_push_server import ORIGIN, SECRET, Content, connect, receive

# One database for the module: the tests that change a user (role, status) each take their own.
SALLY, MAX, WILL, JIM = "seed_sally_id", "seed_max_id", "seed_will_id", "seed_jim_id"
USERS = {uid: User(uid, uid[5:-3], uid, "") for uid in (SALLY, MAX, WILL, JIM)}


class Directory:
    def user(self, user_id):
        return USERS.get(user_id)

    def user_by_extension(self, ext):
        return None


def tone_wav(path, seconds=2.0, rate=8000):
    """16-bit PCM mono: a 440 Hz square-ish tone, enough bytes to seek in."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        frames += (8000 if (i * 440 * 2 // rate) % 2 else -8000).to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


class Crm:
    """Calls in the SuiteCRM test database, with the recorded path crmagi stored for each."""

    def __init__(self, url):
        self.engine = sqlalchemy.create_engine(url)
        CallStore(self.engine).ensure_tables()

    def call(self, owner, recording, deleted=0):
        call_id = str(uuid.uuid4())
        now = datetime.utcnow().replace(microsecond=0)
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO calls (id, name, date_entered, date_modified, deleted, assigned_user_id, status,"
                " direction, date_start) VALUES (%s, 'test call', %s, %s, %s, %s, 'Held', 'Inbound', %s)",
                (call_id, now, now, deleted, owner, now))
            conn.exec_driver_sql("INSERT INTO crmagi_calls (call_id, recording, status) VALUES (%s, %s, 'Held')",
                                 (call_id, recording))
        return call_id

    def sql(self, statement, *args):
        with self.engine.begin() as conn:
            conn.exec_driver_sql(statement, args or None)

    def owner_only(self, user_id):
        """A role giving ``user_id`` view access to their own Calls only (SuiteCRM's 'Owner')."""
        role, action = "role-" + uuid.uuid4().hex[:8], "act-view-" + uuid.uuid4().hex[:8]
        self.sql("INSERT INTO acl_actions (id, name, category, acltype, aclaccess, deleted)"
                 " VALUES (%s, 'view', 'Calls', 'module', 90, 0)", action)
        self.sql("INSERT INTO acl_actions (id, name, category, acltype, aclaccess, deleted)"     # as SuiteCRM has it
                 " VALUES (%s, 'access', 'Calls', 'module', 89, 0)", "act-access-" + uuid.uuid4().hex[:8])
        self.sql("INSERT INTO acl_roles (id, name, deleted) VALUES (%s, 'owners', 0)", role)
        self.sql("INSERT INTO acl_roles_actions (id, role_id, action_id, access_override, deleted)"
                 " VALUES (%s, %s, %s, 75, 0)", uuid.uuid4().hex, role, action)
        self.sql("INSERT INTO acl_roles_users (id, role_id, user_id, deleted) VALUES (%s, %s, %s, 0)",
                 uuid.uuid4().hex, role, user_id)
        return role


class Clock:
    def __init__(self):
        self.offset = 0

    def __call__(self):
        return time.time() + self.offset


@pytest.fixture(scope="module")
def crm(crm_url_module):
    crm = Crm(crm_url_module)
    yield crm
    crm.engine.dispose()


@pytest.fixture
def env(crm, tmp_path):
    store_dir = tmp_path / "monitor"
    store_dir.mkdir()
    clock = Clock()
    recordings = Recordings(SECRET, RecordAccess(crm.engine), LocalStore(str(store_dir)),
                            Transcoder(str(tmp_path / "cache"), 10_000_000), str(store_dir), url_seconds=300,
                            clock=clock)
    hub = Hub()
    service = PopupService(PopupBook(hub, None, pending_seconds=40), Directory(), LocalBus(), Content(),
                           lambda system, linkedid: linkedid, ami_driven=True).start()
    server = PushServer(("127.0.0.1", 0), SECRET, (ORIGIN,), service, hub, Directory(), recordings=recordings,
                        clock=clock).start()
    yield type("Env", (), dict(crm=crm, dir=store_dir, server=server, recordings=recordings, clock=clock,
                               tmp=tmp_path))
    server.stop()
    service.stop()


def get(server, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def ask(server, user_id, calls):
    ws = connect(server, user_id)
    receive(ws, "welcome")
    ws.send(json.dumps({"type": "recordings", "calls": calls}))
    items = receive(ws, "recordings")["items"]
    ws.close()
    return {item["call"]: item for item in items}


def url_for(env, user_id, call_id):
    return recording_urls.mint(SECRET, user_id, call_id, env.clock(), 300)


# -- serving ----------------------------------------------------------------------------------------

def test_a_recording_plays_whole_and_by_range(env):
    data = tone_wav(env.dir / "in-1.wav").read_bytes()
    call = env.crm.call(SALLY, str(env.dir / "in-1.wav"))
    item = ask(env.server, SALLY, [call])[call]
    assert item["url"].startswith("/recordings/") and item["expires"] > time.time()

    response, body = get(env.server, item["url"])
    assert response.status == 200 and body == data
    assert response.getheader("Content-Type") == "audio/wav"
    assert response.getheader("Accept-Ranges") == "bytes"
    assert response.getheader("Content-Length") == str(len(data))
    assert response.getheader("Cache-Control").startswith("private, max-age=")
    assert 0 < int(response.getheader("Cache-Control").split("=")[1]) <= 300
    assert response.getheader("Content-Disposition") == 'inline; filename="in-1.wav"'

    response, body = get(env.server, item["url"], {"Range": "bytes=1000-1999"})
    assert response.status == 206 and body == data[1000:2000]
    assert response.getheader("Content-Range") == "bytes 1000-1999/%d" % len(data)

    response, body = get(env.server, item["url"], {"Range": "bytes=%d-" % (len(data) - 10)})
    assert response.status == 206 and body == data[-10:]
    response, _ = get(env.server, item["url"], {"Range": "bytes=%d-" % len(data)})
    assert response.status == 416 and response.getheader("Content-Range") == "bytes */%d" % len(data)


def test_head_conditional_and_download(env):
    tone_wav(env.dir / "in-2.wav")
    call = env.crm.call(SALLY, "in-2.wav")         # relative: resolved against local_dir
    url = ask(env.server, SALLY, [call])[call]
    response, body = get(env.server, url["url"], method="HEAD")
    assert response.status == 200 and body == b"" and int(response.getheader("Content-Length")) > 0
    etag = response.getheader("ETag")
    response, body = get(env.server, url["url"], {"If-None-Match": etag})
    assert response.status == 304 and body == b""
    response, body = get(env.server, url["url"], {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert response.status == 200 and len(body) > 10         # other bytes in the browser: the whole file
    response, _ = get(env.server, url["download"])
    assert response.getheader("Content-Disposition") == 'attachment; filename="in-2.wav"'
    response, _ = get(env.server, url["url"], method="POST")
    assert response.status == 405


# -- refusals -----------------------------------------------------------------------------------------

def test_tampered_and_expired_urls_are_refused(env):
    tone_wav(env.dir / "in-3.wav")
    call = env.crm.call(SALLY, "in-3.wav")
    url = ask(env.server, SALLY, [call])[call]["url"]
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    response, body = get(env.server, tampered)
    assert response.status == 403 and b"bad signature" in body
    env.clock.offset = 301
    response, body = get(env.server, url)
    assert response.status == 403 and b"expired" in body


def test_another_users_url_is_refused(env):
    """Sally's URL edited to name Max fails its signature; a URL for Will of Sally's Call is not
    minted (and refused if forged with the secret) once Will may see only his own Calls."""
    tone_wav(env.dir / "in-4.wav")
    call = env.crm.call(SALLY, "in-4.wav")
    url = ask(env.server, SALLY, [call])[call]["url"]
    payload, signature = url[len(recording_urls.PREFIX):].split(".")
    claims = json.loads(recording_urls.base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    edited = recording_urls.base64.urlsafe_b64encode(json.dumps(dict(claims, uid=MAX)).encode()).rstrip(b"=")
    response, body = get(env.server, recording_urls.PREFIX + edited.decode() + "." + signature)
    assert response.status == 403 and b"bad signature" in body

    assert call in ask(env.server, WILL, [call])          # no role: SuiteCRM lets everyone view Calls
    env.crm.owner_only(WILL)
    assert ask(env.server, WILL, [call]) == {}
    response, body = get(env.server, url_for(env, WILL, call))
    assert response.status == 403 and b"may not see" in body
    mine = env.crm.call(WILL, "in-4.wav")
    assert "url" in ask(env.server, WILL, [mine])[mine]


def test_a_user_no_longer_active_loses_their_urls(env):
    tone_wav(env.dir / "in-5.wav")
    call = env.crm.call(JIM, "in-5.wav")
    url = ask(env.server, JIM, [call])[call]["url"]
    assert get(env.server, url)[0].status == 200
    env.crm.sql("UPDATE users SET status = 'Inactive' WHERE id = %s", JIM)
    response, body = get(env.server, url)
    assert response.status == 403 and b"not an active CRM user" in body


@pytest.mark.parametrize("recorded", ["../secret.wav", "x/../../secret.wav", "/etc/passwd.wav",
                                      "{outside}/secret.wav", "{store}/../secret.wav"])
def test_recorded_paths_outside_the_store_are_refused(env, recorded):
    tone_wav(env.tmp / "secret.wav")
    call = env.crm.call(SALLY, recorded.format(outside=env.tmp, store=env.dir))
    assert ask(env.server, SALLY, [call])[call] == {"call": call, "missing": NOT_AVAILABLE}
    response, body = get(env.server, url_for(env, SALLY, call))
    assert response.status == 403 and b"RIFF" not in body


def test_a_symlink_out_of_the_store_is_refused(env):
    tone_wav(env.tmp / "secret.wav")
    os.symlink(env.tmp / "secret.wav", env.dir / "link.wav")
    call = env.crm.call(SALLY, "link.wav")
    assert ask(env.server, SALLY, [call])[call]["missing"] == NOT_AVAILABLE
    response, body = get(env.server, url_for(env, SALLY, call))
    assert response.status == 403 and b"RIFF" not in body


def test_missing_files_deleted_calls_and_calls_without_recording(env):
    missing_file = env.crm.call(SALLY, "gone.wav")
    deleted = env.crm.call(SALLY, "in-6.wav", deleted=1)
    silent = env.crm.call(SALLY, "")
    tone_wav(env.dir / "in-6.wav")
    tone_wav(env.dir / "empty.wav", seconds=0)         # MixMonitor of a call that carried no audio
    empty = env.crm.call(SALLY, "empty.wav")
    answer = ask(env.server, SALLY, [missing_file, deleted, silent, empty, "no-such-call"])
    assert answer == {missing_file: {"call": missing_file, "missing": NOT_AVAILABLE},
                      empty: {"call": empty, "missing": NOT_AVAILABLE}}
    response, body = get(env.server, url_for(env, SALLY, missing_file))
    assert response.status == 404 and body == b"recording not available\n"
    assert get(env.server, url_for(env, SALLY, deleted))[0].status == 403


def test_a_malformed_request_is_answered_with_a_reason_not_a_reply(env):
    ws = connect(env.server, SALLY)
    receive(ws, "welcome")
    ws.send(json.dumps({"type": "recordings", "calls": ["x"] * 101}))
    assert "at most 100" in receive(ws, "error")["reason"]
    ws.close()


# -- conversion -------------------------------------------------------------------------------------

def sox_available():
    return shutil.which("sox") is not None


def counting_sox(tmp_path):
    """A sox that counts its runs, so 'converted once' is checked, not assumed."""
    script = tmp_path / "sox-counting"
    script.write_text('#!/bin/sh\necho run >> "%s"\nexec sox "$@"\n' % (tmp_path / "sox-runs"))
    script.chmod(0o755)
    return str(script), tmp_path / "sox-runs"


@pytest.mark.parametrize("name, args", [("in-7.gsm", ["-t", "gsm"]), ("in-7.WAV", ["-t", "wav", "-e", "gsm-full-rate"]),
                                        ("in-7.ulaw", ["-t", "ul"])])
def test_gsm_and_wav49_are_converted_once_to_pcm(env, name, args):
    if not sox_available():
        missing("sox is not installed (apt-get install sox)")
    source = tone_wav(env.tmp / "pcm.wav")
    subprocess.run(["sox", str(source), *args, str(env.dir / name)], check=True)
    env.recordings.transcoder.sox, runs = counting_sox(env.tmp)
    call = env.crm.call(SALLY, name)
    url = ask(env.server, SALLY, [call])[call]["url"]
    response, body = get(env.server, url)
    assert response.status == 200 and response.getheader("Content-Type") == "audio/wav"
    assert body[:4] == b"RIFF" and body[20:22] == b"\x01\x00"          # PCM
    assert len(body) > 30000                                             # 2 s of 8 kHz 16-bit
    response, part = get(env.server, url, {"Range": "bytes=44-99"})
    assert response.status == 206 and part == body[44:100]
    assert runs.read_text().count("run") == 1


def test_the_conversion_cache_keeps_under_its_cap(env):
    if not sox_available():
        missing("sox is not installed (apt-get install sox)")
    env.recordings.transcoder.max_bytes = 40_000          # one converted 2 s recording (32 KB) fits
    urls = []
    for index in range(3):
        subprocess.run(["sox", str(tone_wav(env.tmp / "pcm.wav")), "-t", "gsm", str(env.dir / ("c%d.gsm" % index))],
                       check=True)
        call = env.crm.call(SALLY, "c%d.gsm" % index)
        urls.append(ask(env.server, SALLY, [call])[call]["url"])
        assert get(env.server, urls[-1])[0].status == 200
    cached = os.listdir(env.tmp / "cache")
    assert len(cached) == 1 and sum(os.path.getsize(env.tmp / "cache" / n) for n in cached) <= 40_000
    assert get(env.server, urls[0])[0].status == 200                    # converted again on demand


def test_a_file_sox_cannot_read_is_a_502_not_a_broken_stream(env):
    if not sox_available():
        missing("sox is not installed (apt-get install sox)")
    (env.dir / "junk.WAV").write_bytes(b"not a wav file at all " * 10)
    call = env.crm.call(SALLY, "junk.WAV")
    response, body = get(env.server, ask(env.server, SALLY, [call])[call]["url"])
    assert response.status == 502 and b"not available" in body


# -- the PBX's web server ---------------------------------------------------------------------------

@pytest.fixture
def nginx(env):
    if not nginx_available():
        missing("nginx is not installed (apt-get install nginx)")
    server = Nginx(env.dir, free_port(), user="crmagi", password="s3cret")
    yield server
    server.stop()


def remote(env, nginx, password="s3cret"):
    env.recordings.store = RemoteStore(nginx.url, "crmagi", password, timeout=3)
    env.recordings.monitor_dir = "/var/spool/asterisk/monitor"


def test_remote_store_streams_with_range_through_basic_auth(env, nginx):
    data = tone_wav(env.dir / "in-8.wav").read_bytes()
    remote(env, nginx)
    call = env.crm.call(SALLY, "/var/spool/asterisk/monitor/in-8.wav")
    url = ask(env.server, SALLY, [call])[call]["url"]
    response, body = get(env.server, url)
    assert response.status == 200 and body == data and response.getheader("Content-Type") == "audio/wav"
    response, body = get(env.server, url, {"Range": "bytes=500-"})
    assert response.status == 206 and body == data[500:]
    log = (nginx.dir / "access.log").read_text()
    assert '"GET /monitor/in-8.wav' in log and " 206 " in log         # the PBX was asked for the range only


def test_remote_store_wrong_password_or_down_is_not_available(env, nginx):
    tone_wav(env.dir / "in-9.wav")
    remote(env, nginx, password="wrong")
    call = env.crm.call(SALLY, "in-9.wav")
    assert ask(env.server, SALLY, [call])[call]["missing"] == NOT_AVAILABLE
    remote(env, nginx)
    assert "url" in ask(env.server, SALLY, [call])[call]
    nginx.stop()
    env.recordings.store = RemoteStore(nginx.url, "crmagi", "s3cret", timeout=2)   # no cached HEAD
    assert ask(env.server, SALLY, [call])[call]["missing"] == NOT_AVAILABLE
    assert get(env.server, url_for(env, SALLY, call))[0].status == 404


def test_remote_gsm_is_fetched_and_converted(env, nginx):
    if not sox_available():
        missing("sox is not installed (apt-get install sox)")
    subprocess.run(["sox", str(tone_wav(env.tmp / "pcm.wav")), "-t", "gsm", str(env.dir / "r.gsm")], check=True)
    remote(env, nginx)
    call = env.crm.call(SALLY, "r.gsm")
    response, body = get(env.server, ask(env.server, SALLY, [call])[call]["url"])
    assert response.status == 200 and body[:4] == b"RIFF" and body[20:22] == b"\x01\x00"
    assert not [n for n in os.listdir(env.tmp / "cache") if n.startswith("fetch-")]    # the download is gone
