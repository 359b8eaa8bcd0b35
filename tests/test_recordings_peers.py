"""A call recorded by the real Asterisk 22.10.1 (MixMonitor) plays in Chromium on the real
SuiteCRM 7.14.6 page of the Call, from ``[recordings] local_dir`` and from ``remote_url``
(Debian's nginx on loopback serving the monitor folder), and seeking is served with 206.

The call: AMI Originate of ``Local/<DID>@from-pstn`` with Playback demo-instruct on the caller's
side (peers/README.md: Local channels carry sound only when a side plays something), caller
ID one of sally's demo contacts; the fixture dialplan runs crmagi's incoming AGI, MixMonitor,
rings sally's phone 101 (answers after 2 s) and the hangup AGI reports MIXMONITOR_FILENAME.
"""
import http.client
import os
import socket
import time
import urllib.parse

import pytest

from agi.config import load
from agi.push import build_recordings
from browser import SECRET, chrome, missing_tools, wait_for  # noqa: F401 (fixture)
from conftest import missing
from nginx_peer import Nginx, available as nginx_available
from peer_asterisk import AsteriskPeer, free_port
from peer_suitecrm import SuiteCrmPeer, crmagi_on_peer
from webpush import recording_urls, recordings_http

DID = "4930123400"
SALLY = "seed_sally_id"
PLAYER = ".crmagi-rec-detail audio"
DEBUG = """var a = document.querySelector(%r);
return {ready: a.readyState, network: a.networkState, error: a.error && [a.error.code, a.error.message],
        src: a.src, time: a.currentTime, paused: a.paused, html: a.parentNode.outerHTML};"""


def ami_originate(port, caller, did, prompt="demo-instruct", hold=40):
    """AMI Originate as a PBX admin would send it, Playback on the caller's side: demo-instruct
    (73 s) talks until the phone hangs up after ``hold`` seconds.  40 s of 8 kHz WAV is 640 KB:
    enough that Chromium, which reads ahead of the play position, asks for a seek's bytes
    with a new Range request (it did not for a 320 KB file)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        stream.readline()                                        # banner
        for action in ({"Action": "Login", "Username": "crm", "Secret": "crmsecret", "Events": "off"},
                       {"Action": "Originate", "Channel": "Local/%s@from-pstn" % did, "Application": "Playback",
                        "Data": prompt, "CallerID": '"" <%s>' % caller, "Async": "true",
                        "Variable": "__PHONE_HOLD=%d" % hold},
                       {"Action": "Logoff"}):
            stream.write("".join("%s: %s\r\n" % item for item in action.items()).encode() + b"\r\n")
            stream.flush()
            reply = b""
            while not reply.endswith(b"\r\n\r\n"):
                line = stream.readline()
                if not line:
                    break
                reply += line
            if action["Action"] != "Logoff":
                assert b"Response: Success" in reply, reply


class Served:
    """Every /recordings answer the popup server gave: (Range header, status)."""

    def __init__(self, monkeypatch):
        self.log = []
        real = recordings_http.serve

        def serve(recordings, environ, start_response):
            def start(status, headers, *exc):
                self.log.append((environ.get("HTTP_RANGE"), int(status.split()[0])))
                return start_response(status, headers, *exc)
            return real(recordings, environ, start)
        monkeypatch.setattr(recordings_http, "serve", serve)

    def seeks(self):
        """206 answers to ranges that start past byte 0: a seek, not the first load."""
        return [r for r, status in self.log if status == 206 and r and not r.replace(" ", "").startswith("bytes=0-")]


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    if missing_tools():
        missing(missing_tools())
    agi_port = free_port()
    asterisk = AsteriskPeer(agi_port)
    crm = None
    try:
        crm = SuiteCrmPeer()
        crm.set_extension("sally", "101")
        monitor = asterisk.dir / "var/spool/asterisk/monitor"
        tmp = tmp_path_factory.mktemp("rec")
        app = crmagi_on_peer(crm, tmp, agi={"listen": "127.0.0.1:%d" % agi_port},
                             recordings={"local_dir": str(monitor), "cache_dir": str(tmp / "cache")})
        try:
            yield asterisk, crm, app, monitor, tmp
        finally:
            app.stop(timeout=1)
    finally:
        asterisk.stop()
        if crm is not None:
            crm.stop()


@pytest.fixture(scope="module")
def recorded(peers):
    """(call id, contact id, recorded path) of one real recorded call."""
    asterisk, crm, app, monitor, _ = peers
    contact, phone = crm.sql("SELECT id, phone_work FROM contacts WHERE deleted = 0 AND assigned_user_id = %s"
                             " AND phone_work <> '' ORDER BY id LIMIT 1", SALLY)[0]
    ami_originate(asterisk.ami_port, "+1" + "".join(ch for ch in phone if ch.isdigit()), DID)
    row = wait_for(lambda: crm.sql(
        "SELECT r.call_id, r.recording FROM crmagi_calls r JOIN calls c ON c.id = r.call_id"
        " WHERE c.status = 'Held' AND r.recording IS NOT NULL AND c.parent_id = %s", contact), timeout=90,
        what="the recorded call in the CRM", interval=0.5)
    asterisk.wait_channels_gone()
    call_id, path = row[0]
    assert path.startswith(str(monitor) + "/") and os.path.getsize(path) > 20000, path   # sound, not a header
    return call_id, contact, path


def call_page(crm, call_id):
    return crm.url + "/index.php?module=Calls&action=DetailView&record=" + call_id


def click_play(chrome, page, selector):
    """What the user does: a click on the player's play button (at its left end); Chromium
    allows playing only after such a gesture.  SuiteCRM may render a subpanel twice (Ajax, then
    FooTable), replacing the row and its player: the click goes to the player on the page now."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains

    driver = chrome.on(page)

    def clicked():
        try:
            audio = driver.find_element("css selector", selector)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", audio)
            ActionChains(driver).move_to_element_with_offset(audio, -audio.size["width"] // 2 + 18, 0).click().perform()
            return wait_for(lambda: not driver.execute_script("return arguments[0].paused", audio), timeout=3,
                            what="the player started by its play button")
        except (NoSuchElementException, StaleElementReferenceException, AssertionError):
            return False
    wait_for(clicked, timeout=15, what="a click on the play button of %s" % selector, interval=0.2)


def plays(chrome, page, selector, where):
    """A player appears at ``selector``, and its play button plays the recording."""
    wait_for(lambda: chrome.run(page, "return !!document.querySelector(arguments[0])", selector), timeout=20,
             what="the player in %s" % where)
    click_play(chrome, page, selector)
    wait_for(lambda: chrome.run(page, "var a = document.querySelector(arguments[0]);"
                                      " return a.readyState >= 2 && a.currentTime > 0.5;", selector),
             timeout=15, what="the player in %s playing" % where)


def play_and_seek(chrome, page, served):
    """The player plays (readyState >= 2, currentTime advances) and a seek is served with 206."""
    chrome.wait(page, lambda s: chrome.run(page, "return !!document.querySelector(%r)" % PLAYER),
                "the player on the Call's page", timeout=15)
    click_play(chrome, page, PLAYER)
    state = "var a = document.querySelector(%r); return [a.readyState, a.currentTime, a.duration];" % PLAYER
    try:
        wait_for(lambda: chrome.run(page, state)[0] >= 2 and chrome.run(page, state)[1] > 0.5, timeout=15,
                 what="the recording playing")
    except AssertionError:
        raise AssertionError("not playing: %r, served %r" % (chrome.run(page, DEBUG % PLAYER), served.log))
    ready, first, duration = chrome.run(page, state)
    assert duration > 30            # the whole call, not its first seconds
    wait_for(lambda: chrome.run(page, state)[1] > first + 0.3, timeout=5, what="currentTime advancing")
    target = duration - 2
    chrome.run(page, "var a = document.querySelector(%r); a.currentTime = %f; a.play();" % (PLAYER, target))
    wait_for(lambda: chrome.run(page, state)[1] >= target + 0.2, timeout=10, what="playing on after the seek")


def test_a_mixmonitor_recording_plays_from_local_dir_and_seeks(peers, recorded, chrome, monkeypatch):
    _, crm, app, _, tmp = peers
    served = Served(monkeypatch)
    crm.login(chrome.driver, "sally")
    page = chrome.open(call_page(crm, recorded[0]))
    play_and_seek(chrome, page, served)
    assert any(status == 206 for _, status in served.log), served.log
    link = chrome.run(page, "return document.querySelector('.crmagi-rec-detail a.crmagi-rec-download').href")
    assert urllib.parse.urlsplit(link).query == "download=1"
    shot = os.environ.get("CRMAGI_SCREENSHOTS")
    if shot:
        area = chrome.on(page).find_element("css selector", "#content")
        area.screenshot(os.path.join(shot, "recording-player.png"))


def test_a_seek_past_what_is_loaded_is_a_206(peers, recorded, chrome, monkeypatch):
    """On a slow link the audio element has loaded only the start when the user seeks near the
    end: Chromium asks for the bytes from the seek point with Range, crmagi answers 206."""
    _, crm, app, _, _ = peers
    served = Served(monkeypatch)
    crm.login(chrome.driver, "sally")
    page = chrome.open(call_page(crm, recorded[0]))
    chrome.wait(page, lambda s: chrome.run(page, "return !!document.querySelector(%r)" % PLAYER),
                "the player", timeout=15)
    click_play(chrome, page, PLAYER)            # the gesture that lets the page play audio
    chrome.run(page, "document.querySelector(%r).pause();" % PLAYER)
    # A query of its own: not answered from Chromium's cache of the first test's requests.
    url = chrome.run(page, "return document.querySelector(%r).src" % PLAYER) + "?fresh=%f" % time.time()
    driver = chrome.on(page)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                "downloadThroughput": 24000, "uploadThroughput": 24000})
    try:
        chrome.run(page, "var a = new Audio(); a.preload = 'metadata'; a.muted = true; window.__seek = a;"
                         " a.src = arguments[0];", url)
        wait_for(lambda: chrome.run(page, "return window.__seek.readyState >= 1"), timeout=15, what="metadata")
        target = chrome.run(page, "return window.__seek.duration") - 2
        chrome.run(page, "window.__seek.currentTime = arguments[0]; window.__seek.play();", target)
        wait_for(served.seeks, timeout=15, what="a Range request from the seek point")
        wait_for(lambda: chrome.run(page, "return window.__seek.currentTime") > target + 0.2, timeout=15,
                 what="playing from the seek point")
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                    "downloadThroughput": -1, "uploadThroughput": -1})
    start = int(served.seeks()[0].split("=")[1].split("-")[0])
    assert start > 100000, served.log


def test_a_mixmonitor_recording_plays_from_remote_url(peers, recorded, chrome, monkeypatch):
    if not nginx_available():
        missing("nginx is not installed (apt-get install nginx)")
    _, crm, app, monitor, tmp = peers
    nginx = Nginx(monitor, free_port(), user="crmagi", password="pbx-secret")
    local = app.popups.server.recordings
    try:
        config = load(None, environ={}, overrides={
            "webpush": {"secret": SECRET},
            "recordings": {"remote_url": nginx.url, "remote_user": "crmagi", "remote_password": "pbx-secret",
                           "monitor_dir": str(monitor), "cache_dir": str(tmp / "cache-remote")}})
        app.popups.server.recordings = build_recordings(config, app.read_engine)
        served = Served(monkeypatch)
        crm.login(chrome.driver, "sally")
        page = chrome.open(call_page(crm, recorded[0]))
        play_and_seek(chrome, page, served)
        assert any(status == 206 for _, status in served.log), served.log
        log = (nginx.dir / "access.log").read_text()
        name = os.path.basename(recorded[2])
        assert "GET /monitor/%s" % name in log and '" 206 ' in log, log       # fetched with Range from the PBX
        assert 'HEAD /monitor/%s' % name in log
    finally:
        app.popups.server.recordings = local
        nginx.stop()


def test_the_history_subpanel_of_the_contact_has_the_player(peers, recorded, chrome):
    _, crm, _, _, _ = peers
    call_id, contact, _ = recorded
    crm.login(chrome.driver, "sally")
    page = chrome.open(crm.url + "/index.php?module=Contacts&action=DetailView&record=" + contact)
    # What the user does: open the History subpanel by its title (SuiteCRM loads it by Ajax).
    chrome.on(page).find_element("css selector", "#subpanel_title_history").click()
    plays(chrome, page, '#list_subpanel_history .crmagi-rec[data-crmagi-rec="%s"] audio' % call_id,
          "the History subpanel")


def fetch(app, path):
    conn = http.client.HTTPConnection("127.0.0.1", app.popups.server.address[1], timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_refusals_on_the_real_peers(peers, recorded, chrome):
    """Tampered, expired, another user's URL, and recorded paths outside the store."""
    _, crm, app, monitor, _ = peers
    call_id = recorded[0]
    crm.login(chrome.driver, "sally")
    page = chrome.open(call_page(crm, call_id))
    chrome.wait(page, lambda s: chrome.run(page, "return !!document.querySelector(%r)" % PLAYER),
                "the player", timeout=15)
    url = urllib.parse.urlsplit(chrome.run(page, "return document.querySelector(%r).src" % PLAYER)).path
    assert fetch(app, url)[0] == 200
    assert fetch(app, url[:-2] + ("00" if not url.endswith("00") else "11"))[0] == 403          # tampered
    expired = recording_urls.mint(SECRET, SALLY, call_id, time.time() - 3600, 60)
    assert fetch(app, expired) == (403, b"recording refused: expired recording URL\n")
    # Max may see only his own Calls (a SuiteCRM role): his page gets no player, a URL for him
    # is refused, and sally's URL edited to name him fails its signature.
    role, action = "rec-role-max", crm.sql("SELECT id FROM acl_actions WHERE category = 'Calls' AND name = 'view'")[0][0]
    crm.sql("INSERT INTO acl_roles (id, name, deleted) VALUES (%s, 'own calls', 0)", role)
    crm.sql("INSERT INTO acl_roles_actions (id, role_id, action_id, access_override, deleted)"
            " VALUES ('rec-ra-1', %s, %s, 75, 0)", role, action)
    crm.sql("INSERT INTO acl_roles_users (id, role_id, user_id, deleted) VALUES ('rec-ru-1', %s, 'seed_max_id', 0)",
            role)
    status, body = fetch(app, recording_urls.mint(SECRET, "seed_max_id", call_id, time.time(), 60))
    assert status == 403 and b"may not see" in body
    chrome.reset()
    crm.login(chrome.driver, "max")
    max_page = chrome.open(call_page(crm, call_id))
    time.sleep(2)
    assert chrome.run(max_page, "return document.querySelectorAll('.crmagi-rec audio').length") == 0
    # Recorded paths outside the store: the page says "recording not available", URLs are refused.
    for index, recorded_path in enumerate(("../../../../etc/passwd", str(monitor) + "/../../../../../etc/hosts",
                                           "/etc/hosts")):
        copy = "rec-outside-%d" % index
        crm.sql("INSERT INTO calls (id, name, deleted, assigned_user_id, status, direction, date_start,"
                " date_entered, date_modified) SELECT %s, name, 0, assigned_user_id, status, direction, date_start,"
                " date_entered, date_modified FROM calls WHERE id = %s", copy, call_id)
        crm.sql("INSERT INTO crmagi_calls (call_id, recording, status) VALUES (%s, %s, 'Held')", copy, recorded_path)
        status, body = fetch(app, recording_urls.mint(SECRET, SALLY, copy, time.time(), 60))
        assert status == 403 and b"root:" not in body and b"localhost" not in body, (recorded_path, body)
    chrome.reset()
    crm.login(chrome.driver, "sally")
    outside = chrome.open(call_page(crm, "rec-outside-0"))
    wait_for(lambda: chrome.run(outside, "var n = document.querySelector('.crmagi-rec-detail');"
                                         " return n && n.textContent;") == "Recordingrecording not available",
             timeout=15, what="'recording not available' on the page")


def test_the_popups_history_has_the_player(peers, recorded, chrome):
    """The same client calls again: sally's popup lists the recorded call with its player."""
    from browser import AgiCall, server_tabs

    _, crm, app, _, _ = peers
    call_id, contact, _ = recorded
    phone = crm.sql("SELECT phone_work FROM contacts WHERE id = %s", contact)[0][0]
    chrome.reset()
    crm.login(chrome.driver, "sally")
    page = chrome.open(crm.url + "/index.php?module=Home&action=index")
    chrome.focus(page)                  # the tab sally works in: where her popups go
    wait_for(lambda: [True, True] in [list(t) for t in server_tabs(app, SALLY)], timeout=10,
             what="sally's tab focused and visible at the server")
    again = AgiCall(app, "+1" + "".join(ch for ch in phone if ch.isdigit()))
    again.ring()
    try:
        chrome.wait_popup(page, again.call_id, timeout=10)
        plays(chrome, page, '#crmagi-popups [data-crmagi-rec-call="%s"] .crmagi-rec audio' % call_id,
              "the popup's history")
    finally:
        again.hangup()
