"""The rig of the browser tests: headless Chromium, a fake SuiteCRM web root, the App.

* ``CrmSite``: a tiny gevent web server over a temporary SuiteCRM folder into which
  ``webpush.installer.install`` put the package.  It serves the package's static files
  and ``/page.html?user=<users.id>``, a page whose body ends with EXACTLY what the
  installed PHP hook (custom/include/Crmagi/CrmagiPopupHook.php) prints for that user,
  run with php-cli through the harness of tests/test_suitecrm_package.py.  Only the
  refused-token tests replace the token in that output (``token=``), on purpose.
* ``Browser``: one headless Chromium for a whole test module; each CRM tab is opened
  as a window of its own (focus can be given to one with CDP ``Page.bringToFront``),
  and every window records, from before the page's own scripts run, the websocket
  messages it receives and sends and every ``crmagi:popup`` event (``__seen``), so a
  test can say "this popup was never shown here", not only "it is not there now".
* ``start_app``: `crmagi serve`'s App on port 0 with ``[webpush]`` on, and the package
  installed with the websocket URL of the port it got.
* ``GatedAmi``: tests/fake_ami.py's fake Asterisk Manager, which can hold a recorded
  stream at given events until the test has looked at the browsers.

Tests run gevent monkey-patched (tests/conftest.py): selenium's HTTP calls to
chromedriver yield to the web, AGI, AMI and websocket servers of this process.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import gevent
import gevent.event
import pytest
from gevent.pywsgi import WSGIServer

from agi.app import App
from conftest import missing
from test_end_to_end import app_config
from agi.demo.simulator import SimulatedCall
from fake_ami import FakeAmi, recorded_events
from test_suitecrm_package import HARNESS, TOKEN_HARNESS
from webpush import installer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHP = shutil.which("php") or "/usr/bin/php"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")
SECRET = "browser-test-secret-0123456789abcdef"
VERSION = "0.1.0-browser"
DID = "4930123400"


def missing_tools():
    """Why the browser tests cannot run here, or None."""
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver"), (PHP, "php-cli")):
        if not os.path.exists(path):
            return "%s not installed (%s missing)" % (what, path)
    return None


def wait_for(predicate, timeout=5.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s not met within %.1fs (last value %r)" % (what, timeout, value))
        gevent.sleep(interval)


# --- the SuiteCRM web root ---------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SuiteCRM %(user)s</title></head>
<body><div id="content"><h1>SuiteCRM</h1><p>a CRM page of %(user)s</p></div>
%(hook)s</body></html>
"""
TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8"}


class CrmSite:
    """A SuiteCRM folder served over HTTP; ``requests`` lists every path asked for."""

    def __init__(self, root):
        self.root = Path(root)
        (self.root / "include").mkdir(parents=True, exist_ok=True)
        (self.root / "include/entryPoint.php").write_text("<?php // SuiteCRM marker\n")
        self.harness = self.root.parent / "harness.php"
        self.harness.write_text(HARNESS)
        self.token_harness = self.root.parent / "token_harness.php"
        self.token_harness.write_text(TOKEN_HARNESS)
        self.sessions = True      # False: the crmagiToken entry point finds no logged-in user
        self.requests = []
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None)

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop(timeout=1)

    @property
    def port(self):
        return self.server.address[1]

    @property
    def origin(self):
        return "http://127.0.0.1:%d" % self.port

    def install(self, ws_url, token_seconds=600):
        return installer.install(self.root, secret=SECRET, ws_url=ws_url, token_seconds=token_seconds,
                                 version=VERSION)

    def page_url(self, user, host="127.0.0.1", **params):
        """``token``: put this token in place of the one the hook minted; ``repeat``: print
        the hook's output that many times (ajaxUI can run a page's scripts again)."""
        return "http://%s:%d/page.html?%s" % (host, self.port, urlencode(dict(params, user=user)))

    def hook_output(self, user_id, user_name=None):
        """What the installed after_ui_frame hook prints on a full page of this user."""
        user_name = user_name or user_id.replace("seed_", "").replace("_id", "")
        args = {"root": str(self.root), "user": {"id": user_id, "user_name": user_name},
                "request": {"module": "Home", "action": "index"}, "call": True, "loads": 1}
        done = subprocess.run([PHP, str(self.harness), json.dumps(args)], capture_output=True, text=True,
                              timeout=30)
        if done.returncode != 0 or done.stderr or not done.stdout:
            raise RuntimeError("the PHP hook failed: %s%s" % (done.stderr, done.stdout))
        return done.stdout

    def _page(self, query):
        user = query["user"][0]
        hook = self.hook_output(user, query.get("name", [None])[0])
        if "token" in query:
            config = json.loads(hook[hook.index("{"):hook.index(";</script>")])
            assert hook.count(config["token"]) == 1
            hook = hook.replace(config["token"], query["token"][0])
        hook = hook * int(query.get("repeat", ["1"])[0])
        return PAGE % {"user": user, "hook": hook}

    def _fresh_token(self, cookie):
        """The installed token.php, run by php-cli for the session's user (as SuiteCRM would)."""
        user = dict(part.strip().split("=", 1) for part in cookie.split(";") if "=" in part).get("crm_user")
        args = {"root": str(self.root), "user": {"id": user, "user_name": user} if self.sessions and user else None}
        done = subprocess.run([PHP, str(self.token_harness), json.dumps(args)], capture_output=True, text=True,
                              timeout=30)
        return done.stdout

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        self.requests.append(path)
        headers = [("Cache-Control", "no-store")]
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if path == "/page.html":
            body = self._page(query).encode("utf-8")
            # The page's user stands for SuiteCRM's session cookie.
            cookie = ("Set-Cookie", "crm_user=%s; Path=/" % query["user"][0])
            start_response("200 OK", headers + [("Content-Type", TYPES[".html"]), cookie])
            return [body]
        if path == "/index.php" and query.get("entryPoint") == ["crmagiToken"]:
            start_response("200 OK", headers + [("Content-Type", "application/json")])
            return [self._fresh_token(environ.get("HTTP_COOKIE", "")).encode("utf-8")]
        target = (self.root / path.lstrip("/")).resolve()
        if self.root.resolve() in target.parents and target.is_file():
            start_response("200 OK", headers + [("Content-Type", TYPES.get(target.suffix, "text/plain"))])
            return [target.read_bytes()]
        start_response("404 Not Found", headers + [("Content-Type", "text/plain")])
        return [b"not found\n"]


# --- the browser -------------------------------------------------------------------------------

# Runs in every window before the page's own scripts: records what the socket hears and
# says, how many sockets the page opened, and every popup popup.js put on the page.
RECORDER = r"""
(function () {
  var Native = window.WebSocket;
  window.__wsLog = []; window.__wsSent = []; window.__wsCount = 0; window.__seen = [];
  function Recorded(url, protocols) {
    var ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    window.__wsCount += 1;
    ws.addEventListener('message', function (e) { try { window.__wsLog.push(JSON.parse(e.data)); } catch (x) {} });
    ws.addEventListener('close', function (e) { window.__wsLog.push({type: '(closed)', code: e.code}); });
    var send = ws.send;
    ws.send = function (data) {
      try { window.__wsSent.push(JSON.parse(data)); } catch (x) {}
      return send.call(ws, data);
    };
    return ws;
  }
  Recorded.prototype = Native.prototype;
  ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'].forEach(function (k) { Recorded[k] = Native[k]; });
  window.WebSocket = Recorded;
  document.addEventListener('crmagi:popup', function (e) { window.__seen.push(e.detail.call); });
})();
"""

STATUS = """var s = window.__crmagiPopup || null;
return {status: s && {state: s.state, refused: s.refused, user: s.user, shown: s.shown},
        popups: Array.prototype.map.call(document.querySelectorAll('#crmagi-popups [data-crmagi-call]'),
                                         function (n) { return n.getAttribute('data-crmagi-call'); }),
        seen: window.__seen, received: window.__wsLog, sent: window.__wsSent, sockets: window.__wsCount,
        visible: document.visibilityState, focused: document.hasFocus()};"""


def make_driver(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + ("--user-data-dir=%s" % profile_dir, "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


class Browser:
    """One Chromium; CRM tabs are windows named by selenium handles."""

    def __init__(self, driver):
        self.driver = driver
        self.home = driver.current_window_handle
        self.frozen = set()

    def open(self, url, connected=True):
        """A new window on url; waits for the websocket to be welcomed unless connected=False."""
        driver = self.driver
        driver.switch_to.new_window("window")
        handle = driver.current_window_handle
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        driver.get(url)
        if connected:
            self.wait(handle, lambda s: s["status"] and s["status"]["state"] == "open", "welcome", timeout=5)
        return handle

    def on(self, handle):
        if self.driver.current_window_handle != handle:
            self.driver.switch_to.window(handle)
        return self.driver

    def run(self, handle, script, *args):
        return self.on(handle).execute_script(script, *args)

    def state(self, handle):
        return self.run(handle, STATUS)

    def wait(self, handle, predicate, what="condition", timeout=5.0):
        return wait_for(lambda: predicate(self.state(handle)), timeout=timeout, what=what)

    def wait_popup(self, handle, call_id, timeout=5.0):
        return self.wait(handle, lambda s: call_id in s["popups"], "popup %s shown" % call_id, timeout)

    def popup(self, handle, call_id):
        from selenium.webdriver.common.by import By

        return self.on(handle).find_element(By.CSS_SELECTOR, '#crmagi-popups [data-crmagi-call="%s"]' % call_id)

    def focus(self, handle):
        """Headless Chromium gives focus to a window only when asked (and never takes it back)."""
        self.on(handle).execute_cdp_cmd("Page.bringToFront", {})

    def hide(self, handle):
        """The page becomes hidden (visibilitychange, document.hidden, no focus) yet keeps running.

        The first time by freezing and waking it up (which leaves it hidden, and sometimes
        drops its websocket); after ``show`` by switching the focus emulation off again."""
        driver = self.on(handle)
        if handle in self.frozen:
            driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": False})
            return
        driver.execute_cdp_cmd("Page.setWebLifecycleState", {"state": "frozen"})
        driver.execute_cdp_cmd("Page.setWebLifecycleState", {"state": "active"})
        self.frozen.add(handle)

    def show(self, handle):
        """A hidden page visible and focused again (CDP focus emulation)."""
        self.on(handle).execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})

    def reset(self):
        """Close every CRM window (their sockets close with them)."""
        from selenium.common.exceptions import NoAlertPresentException

        for handle in self.driver.window_handles:
            if handle != self.home:
                self.driver.switch_to.window(handle)
                try:
                    self.driver.switch_to.alert.dismiss()     # a failed XSS test leaves one open
                except NoAlertPresentException:
                    pass
                self.driver.close()
        self.driver.switch_to.window(self.home)
        self.frozen.clear()


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    reason = missing_tools()
    if reason:
        missing(reason)
    driver = make_driver(tempfile.mkdtemp(prefix="chrome-", dir=str(tmp_path_factory.mktemp("profile"))))
    try:
        yield Browser(driver)
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    crm = CrmSite(tmp_path_factory.mktemp("site") / "suitecrm").start()
    yield crm
    crm.stop()


# --- the App -----------------------------------------------------------------------------------

def start_app(crm_url, site, tmp_path, ami_port=None, **webpush):
    """The App with popups on (port 0), and the package installed with the port it got."""
    web = {"secret": SECRET, "listen": "127.0.0.1:0", "allowed_origins": site.origin}
    web.update({key: str(value) for key, value in webpush.items()})
    app = App(app_config(crm_url, tmp_path, ami_port, webpush=web)).start()
    app._warm_up()                  # what start() spawned: users and lookup tables loaded before a call
    app.directory.staff()
    site.install(ws_url(app))
    return app


def ws_url(app):
    return "ws://127.0.0.1:%d/ws" % app.popups.server.address[1]


def health(app):
    url = "http://127.0.0.1:%d/health" % app.popups.server.address[1]
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def server_tabs(app, user_id):
    """(visible, focused) of the user's tabs as the push server sees them, oldest first."""
    return [(tab.visible, tab.focused) for tab in app.popups.hub.members("user:" + user_id)]


class OffsetClock:
    """time.monotonic plus an offset the test moves: 40 s pass without sleeping 40 s."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.monotonic() + self.offset


# --- calls -------------------------------------------------------------------------------------

class AgiCall:
    """An inbound call as Asterisk runs crmagi's dialplan: the ``incoming`` AGI now, the
    hangup handler's ``hangup`` AGI when the test says (SimulatedCall.run does both at once)."""

    def __init__(self, app, callerid, calleridname="", did=DID):
        self.app = app
        self.sim = SimulatedCall(app.agi.address, "incoming", number=did, callerid=callerid,
                                 calleridname=calleridname)

    def ring(self):
        result = self.sim._session("incoming", "crmagi-inbound", 3, [self.sim.number], None, 5.0)
        assert result.server_closed and not result.timed_out, result
        self.call_id = result.variables["CRM_CALL_ID"]
        return result

    def hangup(self, dial=None):
        chan = self.sim.channel
        for name, value in (dial or {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "5"}).items():
            chan.write(name, value)
        chan.cause, chan.dead = "16", True
        return self.sim._session("hangup", "crmagi-hangup", 1, [], None, 5.0)


class GatedAmi(FakeAmi):
    """FakeAmi whose recorded stream stops before the events listed in ``pauses`` until
    ``release()``: the browsers can be looked at between a ring and its answer."""

    def __init__(self):
        super().__init__()
        self.pauses = set()
        self.paused_at = None
        self.gate = gevent.event.Event()

    def _stream(self, sock):
        events = self.events
        if events:
            # The App resyncs after login (CoreShowChannels); a real Asterisk would list the
            # call in progress, this fake lists nothing: a call streamed (and held) before that
            # answer would be taken for gone.  So the recording starts after the resync.
            listed = len(self._listings())
            wait_for(lambda: len(self._listings()) > listed, timeout=5,
                     what="the App's CoreShowChannels after login")
            gevent.sleep(0.05)
        for index, frame in enumerate(events):
            if index in self.pauses:
                self.pauses.discard(index)
                self.gate.clear()
                self.paused_at = index
                self.gate.wait()
                self.paused_at = None
            sock.sendall(frame + b"\r\n\r\n")
            gevent.sleep(0)
        self.events = []

    def _listings(self):
        return [action for action in self.actions if action.get("Action") == "CoreShowChannels"]

    def play(self, app, scenario, pauses=()):
        """Stream the recording of ``scenario`` to the App on a fresh login (as
        tests/test_live_end_to_end.py does); returns once the first pause is reached."""
        assert app.ami.connected.wait(5), "the App did not log in to the fake AMI"
        self.pauses = set(pauses)
        self.events = recorded_events(scenario)
        app.ami._sock.close()          # the stream starts on a fresh login
        if pauses:
            self.wait_paused(min(pauses))

    def wait_paused(self, index, timeout=10.0):
        wait_for(lambda: self.paused_at == index, timeout, "AMI stream held before event %d" % index)

    def release(self, then_wait=None):
        self.gate.set()
        if then_wait is not None:
            self.wait_paused(then_wait)


def event_index(scenario, *needles, start=0):
    """Index of the first recorded AMI event (from ``start``) containing every needle."""
    for index, frame in enumerate(recorded_events(scenario)):
        if index >= start and all(needle.encode() in frame for needle in needles):
            return index
    raise LookupError("no event with %s in %s" % (needles, scenario))
