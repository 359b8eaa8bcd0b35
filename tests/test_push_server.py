"""The popup websocket server over real sockets: who is admitted, who hears what."""
import json
import socket
import time

import gevent
import pytest
import websocket

from crmsync.models import LookupResult, User
from webpush import auth
from webpush.bus import LocalBus
from webpush.content import Rendered
from webpush.hub import Hub
from webpush.popups import PopupBook
from webpush import server as server_module
from webpush.server import PushServer
from webpush.service import PopupService

SECRET = "test-secret-0123456789"
ORIGIN = "http://crm.example.test"
USERS = {"u-ann": User("u-ann", "ann", "Ann Agent", "101"), "u-bob": User("u-bob", "bob", "Bob Agent", "102")}


class Directory:
    def user(self, user_id):
        return USERS.get(user_id)

    def user_by_extension(self, ext):
        return next((u for u in USERS.values() if u.extension == ext), None)

    def lookup(self, number):
        return LookupResult("unknown", number)


class Content:
    def render(self, info, user):
        return Rendered('<section data-crmagi-call="%s">%s</section>' % (info.call_id, info.number),
                        "Call from %s" % info.number, info.number)


@pytest.fixture
def push():
    hub = Hub()
    book = PopupBook(hub, None, pending_seconds=40)
    service = PopupService(book, Directory(), LocalBus(), Content(), lambda system, linkedid: "call-" + linkedid,
                           ami_driven=True).start()
    server = PushServer(("127.0.0.1", 0), SECRET, (ORIGIN,), service, hub, Directory(), token_seconds=600).start()
    yield server, service
    server.stop()
    service.stop()


def connect(server, user_id="u-ann", token=None, origin=ORIGIN, **state):
    url = "ws://127.0.0.1:%d/ws" % server.address[1]
    ws = websocket.create_connection(url, origin=origin, timeout=5)
    if token is None:
        token = auth.mint(SECRET, user_id, time.time(), 600)
    hello = {"type": "hello", "token": token, "tab": "t", "visible": True, "focused": True}
    hello.update(state)
    try:
        ws.send(json.dumps(hello))
    except OSError:      # refused before it read the hello (origin): the refusal is still readable
        pass
    return ws


def receive(ws, kind, timeout=5.0):
    """The next message of ``kind`` (others are skipped)."""
    ws.settimeout(timeout)
    while True:
        message = json.loads(ws.recv())
        if message["type"] == kind:
            return message


def ring(service, extension, linkedid="L1", number="+4930123400"):
    service.post_event({"e": "ring", "call": "call-" + linkedid, "linkedid": linkedid, "ext": extension,
                        "leg": "leg-" + extension, "number": number, "name": "", "did": "", "queue": None})


def refusal(ws):
    message = receive(ws, "refused")
    ws.settimeout(5)
    frame = ws.recv_frame()        # raw: no close reply to a socket the server already shut
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    code = int.from_bytes(frame.data[:2], "big")
    ws.shutdown()
    return message["reason"], code


def test_user_gets_their_popup_and_nobody_else_does(push):
    server, service = push
    ann, bob = connect(server, "u-ann"), connect(server, "u-bob")
    receive(ann, "welcome"), receive(bob, "welcome")
    ring(service, "101")
    popup = receive(ann, "popup")
    assert popup["call"] == "call-L1" and "+4930123400" in popup["html"]
    bob.send(json.dumps({"type": "ping"}))
    assert receive(bob, "pong")          # Bob's socket works, and heard nothing before the pong
    ann.close(), bob.close()


@pytest.mark.parametrize("make_token, reason", [
    (lambda: auth.mint("another-installation-key", "u-ann", time.time(), 600), "bad signature"),
    (lambda: auth.mint(SECRET, "u-ann", time.time() - 700, 600), "expired token"),
    (lambda: "eyJ2IjoxLCJ1aWQiOiJ1LWFubiJ9.00", "bad signature"),
    (lambda: "junk", "malformed token"),
    (lambda: "", "no token"),
])
def test_forged_expired_or_junk_tokens_are_refused_with_a_reason(push, make_token, reason):
    server, service = push
    ws = connect(server, token=make_token())
    assert refusal(ws)[0] == reason


def test_a_token_of_one_user_edited_to_name_another_is_refused(push):
    server, _ = push
    token = auth.mint(SECRET, "u-bob", time.time(), 600)
    payload, signature = token.split(".")
    forged = auth._b64(auth._unb64(payload).replace(b"u-bob", b"u-ann")) + "." + signature
    assert refusal(connect(server, token=forged)) == ("bad signature", 4401)


def test_wrong_origin_is_refused(push):
    server, _ = push
    reason, code = refusal(connect(server, origin="http://evil.example"))
    assert code == 4403
    assert "origin http://evil.example is not allowed" in reason


def test_first_message_must_be_a_hello(push):
    server, _ = push
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % server.address[1], origin=ORIGIN, timeout=5)
    ws.send(json.dumps({"type": "transfer", "call": "x", "exten": "101"}))
    assert refusal(ws)[0] == "the first message must be hello"


def test_junk_after_login_is_answered_and_the_socket_survives(push):
    server, service = push
    ws = connect(server)
    receive(ws, "welcome")
    ws.send("not json")
    assert receive(ws, "error")["reason"] == "not JSON"
    ws.send(json.dumps({"type": "hello", "visible": "yes"}))
    assert "visible" in receive(ws, "error")["reason"]
    ring(service, "101")
    assert receive(ws, "popup")["call"] == "call-L1"


def test_oversized_frame_closes_the_socket_without_reading_it(push):
    server, _ = push
    ws = connect(server)
    receive(ws, "welcome")
    ws.send("x" * 100000)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, socket.timeout)):
        ws.settimeout(5)
        while True:
            if ws.recv() in ("", None):
                raise websocket.WebSocketConnectionClosedException()


def test_transfer_of_a_call_that_is_not_yours_is_refused(push):
    server, service = push
    ann, bob = connect(server, "u-ann"), connect(server, "u-bob")
    receive(ann, "welcome"), receive(bob, "welcome")
    ring(service, "101")
    receive(ann, "popup")
    bob.send(json.dumps({"type": "transfer", "call": "call-L1", "exten": "103"}))
    result = receive(bob, "result")
    assert not result["ok"] and "not yours" in result["text"]


def test_transfer_of_your_call_runs_the_transfer(push):
    server, service = push
    done = []
    service.transfer_call = lambda linkedid, ext: (done.append((linkedid, ext)) or (True, "transferred to " + ext))
    ann = connect(server, "u-ann")
    receive(ann, "welcome")
    ring(service, "101")
    receive(ann, "popup")
    ann.send(json.dumps({"type": "transfer", "call": "call-L1", "exten": "102"}))
    assert receive(ann, "result")["ok"] and done == [("L1", "102")]


def test_pings_renew_a_token_near_expiry(push):
    server, _ = push
    server.token_seconds = 600
    ws = connect(server, token=auth.mint(SECRET, "u-ann", time.time() - 500, 600))
    receive(ws, "welcome")
    ws.send(json.dumps({"type": "ping"}))
    fresh = receive(ws, "token")["token"]
    assert auth.verify(SECRET, fresh, time.time()).user_id == "u-ann"


def test_health_counts_tabs(push):
    server, _ = push
    ws = connect(server)
    receive(ws, "welcome")
    with socket.create_connection(server.address[:2], timeout=5) as raw:
        raw.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        body = b""
        while chunk := raw.recv(4096):
            body += chunk
    assert json.loads(body.split(b"\r\n\r\n", 1)[1])["tabs"] == 1


def test_unknown_caller_ring_without_agi_info_looks_the_number_up(push):
    server, service = push
    ws = connect(server)
    receive(ws, "welcome")
    ring(service, "101", linkedid="L9", number="+15550001111")
    assert "+15550001111" in receive(ws, "popup")["html"]


# -- abuse by one client (second reader's findings) -------------------------------------------

def health(server):
    with socket.create_connection(server.address[:2], timeout=2) as raw:
        raw.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        body = b""
        while chunk := raw.recv(4096):
            body += chunk
    return json.loads(body.split(b"\r\n\r\n", 1)[1])


def test_a_message_split_into_endless_fragments_is_cut_and_starves_nobody(push):
    server, _ = push
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % server.address[1], origin=ORIGIN, timeout=5)
    ws.send_frame(websocket.ABNF(fin=0, opcode=websocket.ABNF.OPCODE_TEXT, data="x" * 3000))
    assert health(server)["tabs"] == 0                     # the server still answers others
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(50):                                # 6 KB and counting: over the 4 KB cap
            ws.send_frame(websocket.ABNF(fin=0, opcode=websocket.ABNF.OPCODE_CONT, data="x" * 3000))
            gevent.sleep(0.01)
        ws.recv()


def test_a_flood_of_messages_is_refused_with_a_reason(push):
    server, service = push
    ws = connect(server)
    receive(ws, "welcome")
    for _ in range(100):
        ws.send(json.dumps({"type": "state", "visible": True, "focused": True}))
    assert receive(ws, "refused")["reason"] == "more than 5 messages a second"
    assert service.queue.qsize() <= 2                      # tab changes were coalesced meanwhile


def test_a_user_who_is_no_longer_active_in_the_crm_is_refused(push):
    server, _ = push
    reason, code = refusal(connect(server, "u-fired"))
    assert (reason, code) == ("user u-fired is not an active CRM user", 4403)


def test_renewed_tokens_stop_when_the_session_is_older_than_the_limit(push):
    server, _ = push
    old = time.time() - server_module.MAX_SESSION - 60
    ws = connect(server, token=auth.mint(SECRET, "u-ann", time.time() - 500, 600, session_start=old))
    receive(ws, "welcome")
    ws.send(json.dumps({"type": "ping"}))
    receive(ws, "pong")
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws, "pong") and not [m for m in drain(ws) if m["type"] == "token"]


def test_tabs_per_user_are_capped(push, monkeypatch):
    server, _ = push
    monkeypatch.setattr(server_module, "MAX_TABS_PER_USER", 2)
    first, second = connect(server), connect(server)
    receive(first, "welcome"), receive(second, "welcome")
    assert refusal(connect(server)) == ("more than 2 tabs open for this user", 4403)


@pytest.mark.parametrize("exten, why", [("\u0663\u0660\u0661", "not an extension"),   # Arabic-Indic digits
                                        ("004930123456", "not an extension"),          # outside
                                        ("109", "not a CRM user's phone")])
def test_transfer_goes_only_to_a_colleagues_extension(push, exten, why):
    server, service = push
    service.transfer_call = lambda linkedid, ext: (True, "transferred")
    ann = connect(server, "u-ann")
    receive(ann, "welcome")
    ring(service, "101")
    receive(ann, "popup")
    ann.send(json.dumps({"type": "transfer", "call": "call-L1", "exten": exten}))
    result = receive(ann, "result")
    assert not result["ok"] and why in result["text"]


def test_a_half_sent_handshake_is_dropped(push, monkeypatch):
    server, _ = push
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT", 0.3)
    with socket.create_connection(server.address[:2], timeout=5) as raw:
        raw.sendall(b"GET /ws HTTP/1.1\r\n")
        started = time.monotonic()
        while raw.recv(1000):              # an HTTP error at most, then the close
            pass
        assert time.monotonic() - started < 3


def drain(ws):
    got = []
    try:
        while True:
            got.append(receive(ws, "token", timeout=0.3))
    except websocket.WebSocketTimeoutException:
        return got


def test_a_user_deactivated_while_connected_is_refused_at_the_next_renewal(push, monkeypatch):
    server, _ = push
    ws = connect(server, token=auth.mint(SECRET, "u-ann", time.time() - 500, 600))
    receive(ws, "welcome")
    monkeypatch.delitem(USERS, "u-ann")
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws, "refused")["reason"] == "user u-ann is not an active CRM user"


def raw_request(server, data):
    with socket.create_connection(server.address[:2], timeout=5) as raw:
        raw.sendall(data)
        answer = b""
        raw.settimeout(2)
        try:
            while True:             # until the server closes, or keeps the connection for more
                chunk = raw.recv(4096)
                if not chunk:
                    return answer
                answer += chunk
        except socket.timeout:
            return answer


@pytest.mark.parametrize("request_bytes, status", [
    # found by the live junk run (tests/test_junk_traffic.py): gevent-websocket answers a bad
    # handshake with a str body that pywsgi cannot send (TypeError, a traceback per request)
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"426"),
])
def test_a_junk_handshake_gets_an_http_error_not_a_traceback(push, capfd, request_bytes, status):
    server, _ = push
    answer = raw_request(server, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status, answer
    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert length and int(length[0].split(b":")[1]) == len(body), answer      # the whole answer came
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("request_bytes", [
    # found by bench/junk_traffic.py: a Sec-WebSocket-Key that is not base64 raised binascii.Error
    # out of gevent-websocket (a 500 and a traceback per request)
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abcde\r\n\r\n",
    # ... and a one-number HTTP version, an IndexError in pywsgi's version check (a traceback)
    b"GET /ws HTTP/1\r\nHost: x\r\n\r\n",
])
def test_junk_in_the_request_line_or_key_is_a_400_without_a_traceback(push, monkeypatch, request_bytes):
    from gevent import pywsgi

    printed = []
    monkeypatch.setattr(pywsgi.traceback, "print_exc", lambda *args, **kwargs: printed.append(args))
    server, _ = push
    answer = raw_request(server, request_bytes)
    assert answer.split(b" ")[1] == b"400", answer
    assert printed == []
