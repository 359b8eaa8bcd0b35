"""Several crmagi boxes share the browsers through Redis (webpush/bus.py), against the real Redis."""
import json
import subprocess
import time
import uuid

import pytest
import websocket

from conftest import UNDER_CI
from crmsync.models import Caller, LookupResult, User
from webpush import auth
from webpush.bus import RedisBus
from webpush.callinfo import CallInfo, from_json, to_json
from webpush.hub import Hub
from webpush.popups import PopupBook
from webpush.server import PushServer
from webpush.service import PopupService
from test_push_server import ORIGIN, SECRET, Content, Directory, receive

REDIS = "redis://127.0.0.1:6379/0"


def redis_up():
    try:
        return subprocess.run(["redis-cli", "ping"], capture_output=True, text=True, timeout=5).stdout.strip() == "PONG"
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not redis_up() and not UNDER_CI, reason="Redis is not running on 127.0.0.1:6379")


def box(channel):
    hub = Hub()
    bus = RedisBus(REDIS, channel=channel)
    service = PopupService(PopupBook(hub, None), Directory(), bus, Content(), lambda s, linkedid: "call-" + linkedid,
                           ami_driven=True).start()
    server = PushServer(("127.0.0.1", 0), SECRET, (ORIGIN,), service, hub, Directory()).start()
    assert bus.ready.wait(5), "no Redis subscription"
    return service, server


def test_a_call_seen_by_one_box_pops_up_in_a_tab_on_another():
    channel = "crmagi:test:" + uuid.uuid4().hex
    (service_a, server_a), (service_b, server_b) = box(channel), box(channel)
    try:
        ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % server_b.address[1], origin=ORIGIN, timeout=5)
        ws.send(json.dumps({"type": "hello", "token": auth.mint(SECRET, "u-ann", time.time(), 600)}))
        receive(ws, "welcome")
        # Box A's AMI saw extension 101 ring; Ann's browser is connected to box B.
        event = type("Ringing", (), dict(linkedid="L7", leg_id="leg", extension="101", caller_number="+4930111111",
                                         caller_name="", did="4930123400", direction="Inbound", queue=None))()
        service_a.on_ami(event)
        assert receive(ws, "popup")["call"] == "call-L7"
        ws.close()
    finally:
        for service, server in ((service_a, server_a), (service_b, server_b)):
            server.stop()
            service.stop()


def test_call_info_survives_the_trip_through_json():
    owner = User("u-ann", "ann", "Ann Agent", "101")
    caller = Caller("Contacts", "c1", "Anna O'Neil", "Spreewald", owner, "phone_work", "+49 30 111111", "e164")
    info = CallInfo("call-1", "L1", "+4930111111", did="4930123400",
                    result=LookupResult("found", "+4930111111", "+4930111111", caller, ("rule",)))
    assert from_json(json.loads(json.dumps(to_json(info)))) == info


def test_junk_on_the_channel_is_skipped():
    bus, got = RedisBus(REDIS, channel="x"), []
    bus.handler = got.append
    bus._deliver({"type": "message", "data": b"not json"})
    bus._deliver({"type": "message", "data": b'["a list"]'})
    bus._deliver({"type": "message", "data": b'{"e": "ended", "call": "c"}'})
    assert got == [{"e": "ended", "call": "c"}]
    bus.close()


def hello(server, user_id, focused):
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % server.address[1], origin=ORIGIN, timeout=5)
    ws.send(json.dumps({"type": "hello", "token": auth.mint(SECRET, user_id, time.time(), 600),
                        "visible": True, "focused": focused}))
    receive(ws, "welcome")
    return ws


def kinds(ws, wait=0.5):
    got = []
    ws.settimeout(wait)
    try:
        while True:
            message = json.loads(ws.recv())
            if message["type"] in ("popup", "close"):
                got.append(message["type"])
    except websocket.WebSocketTimeoutException:
        return got


def test_one_popup_per_user_when_their_tabs_are_on_two_boxes(monkeypatch):
    from webpush import boxes

    channel = "crmagi:test:" + uuid.uuid4().hex
    (service_a, server_a), (service_b, server_b) = box(channel), box(channel)
    try:
        on_b = hello(server_b, "u-ann", focused=False)        # an older tab, in the background
        time.sleep(0.3)
        on_a = hello(server_a, "u-ann", focused=True)         # the tab Ann works in
        time.sleep(0.3)
        ring = type("Ringing", (), dict(linkedid="L8", leg_id="leg", extension="101", caller_number="+4930111111",
                                        caller_name="", did="", direction="Inbound", queue=None))()
        service_b.on_ami(ring)
        assert kinds(on_a) == ["popup"] and kinds(on_b) == []
        on_b.send(json.dumps({"type": "state", "visible": True, "focused": True}))    # Ann switches tabs
        on_a.send(json.dumps({"type": "state", "visible": True, "focused": False}))
        assert kinds(on_b) == ["popup"] and kinds(on_a) == ["close"]
        # Box B dies without a word: after BOX_TIMEOUT box A shows the popup in its tab again.
        server_b.stop()
        service_b.stop()
        monkeypatch.setattr(boxes, "BOX_TIMEOUT", 0.2)
        time.sleep(0.3)
        service_a._post(service_a._sweep)
        assert kinds(on_a) == ["popup"]
    finally:
        for service, server in ((service_a, server_a), (service_b, server_b)):
            server.stop()
            service.stop()
