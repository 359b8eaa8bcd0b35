"""Issue #5 section 4: the call popup in a real headless Chromium.

The whole chain runs for real: the SuiteCRM package installed by webpush/installer.py
into a SuiteCRM folder, pages carrying what its PHP hook prints (php-cli), popup.js and
popup.css served from that folder, the App of `crmagi serve` (FastAGI, push server,
popup service) against MariaDB with the SuiteCRM schema, calls from the AGI simulator
and recorded AMI streams (tests/browser.py has the rig).  Assertions are on the DOM of
each window and on what its websocket received, so each test can fail.

Focus and visibility in headless Chromium (checked, Chromium 156): every window is
"visible"; a new window has no focus; ``Page.bringToFront`` gives a window focus (a
``focus`` event) and no window ever loses it again; freezing a page with
``Page.setWebLifecycleState`` and waking it up leaves it running but hidden
(``visibilitychange`` to hidden, ``document.hasFocus()`` false; sometimes the freeze
also drops its websocket); ``Emulation.setFocusEmulationEnabled`` then toggles that
page between visible+focused and hidden.  The two-tab test uses exactly these moves.
"""
import time

import gevent
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from asterisk_replay import FakeAsterisk, load_scenario
from browser import (DID, SECRET, AgiCall, GatedAmi, OffsetClock, chrome, event_index, health,  # noqa: F401
                     missing_tools, server_tabs, site, start_app, wait_for)
from conftest import UNDER_CI
from crmsync.calls import CallStore
from test_end_to_end import CONTACT, rows, seeded
from test_live_end_to_end import SEED_LIVE
from webpush import auth

pytestmark = pytest.mark.skipif(missing_tools() is not None and not UNDER_CI, reason=str(missing_tools()))

XSS = "<img src=x onerror=alert(1)>"
CONTACT_XSS = "e2e-contact-xss-0000000000000000006"       # +49 30 666666, owner sally
SEED_BROWSER = SEED_LIVE + [
    "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted, date_modified)"
    " VALUES ('%s', NULL, '%s', '+49 30 666666', 'seed_sally_id', 0, '2026-11-01 10:00:00')"
    % (CONTACT_XSS, XSS),
]
SALLY, MAX, WILL, CHRIS = "seed_sally_id", "seed_max_id", "seed_will_id", "seed_chris_id"
ANNA = "+4930111111"          # contact Anna O'Neil, owner sally (101)
BERND = "+4930222222"         # contact Bernd Brandt, owner max (102)
CARLA = "+4930333333"         # contact Carla Cortez, owner will (103)
DIETER = "+4930987654"        # lead Dieter Dorn, owner chris (104)
# Sally's phone book: her colleagues, never herself.
PHONE_BOOK = [("Chris Olliver", "104"), ("Max Jensen", "102"), ("Will Westin", "103")]
LATENCIES = []                # ms from just before the AGI request to the popup in the DOM


@pytest.fixture(scope="module")
def db(crm_url_module):
    engine = seeded(crm_url_module, SEED_BROWSER)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module", autouse=True)
def latency_report():
    yield
    if LATENCIES:
        print("\nAGI -> DOM popup latency (ms): %s" % ", ".join("%.0f" % ms for ms in LATENCIES))


@pytest.fixture
def browser(chrome):  # noqa: F811
    yield chrome
    chrome.reset()


@pytest.fixture
def apps(db, crm_url_module, site, chrome, tmp_path):  # noqa: F811
    """start(**settings) -> a running App; windows are closed before the Apps stop."""
    started = []

    def start(**settings):
        app = start_app(crm_url_module, site, tmp_path, **settings)
        started.append(app)
        return app

    yield start
    chrome.reset()
    for app in started:
        app.stop(timeout=1)


@pytest.fixture
def ami():
    fake = GatedAmi().start()
    yield fake
    fake.pauses.clear()
    fake.gate.set()
    fake.stop()


def ring(browser, handle, app, number, **kwargs):
    """An inbound AGI call whose popup must reach ``handle``: (call, latency in ms)."""
    call = AgiCall(app, number, **kwargs)
    before = time.time() * 1000
    call.ring()
    browser.wait_popup(handle, call.call_id)
    latency = browser.state(handle)["status"]["shown"][call.call_id] - before
    LATENCIES.append(latency)
    return call, latency


def received(state, kind, call_id=None):
    return [m for m in state["received"] if m["type"] == kind and (call_id is None or m.get("call") == call_id)]


def text(element, css):
    return element.find_element(By.CSS_SELECTOR, css).text


def staff_rows(popup):
    return popup.find_elements(By.CSS_SELECTOR, "tr[data-crmagi-staff]")


def visible_staff(popup):
    return [text(row, ".crmagi-staff-name") for row in staff_rows(popup) if row.is_displayed()]


# --- 1 ------------------------------------------------------------------------------------------

def test_popup_reaches_the_right_users_tab_only_within_a_second(apps, browser, site, db):
    app = apps()
    sally = browser.open(site.page_url(SALLY))
    max_ = browser.open(site.page_url(MAX))
    call, latency = ring(browser, sally, app, ANNA)
    assert latency < 1000, "popup after %.0f ms" % latency

    popup = browser.popup(sally, call.call_id)
    assert popup.is_displayed()
    assert browser.run(sally, "return getComputedStyle(document.getElementById('crmagi-popups')).position") \
        == "fixed"                                                       # popup.css came with the hook
    assert text(popup, ".crmagi-name") == "Anna O'Neil"
    assert text(popup, ".crmagi-number") == "+49 30 111111"
    assert text(popup, ".crmagi-module").lower() == "contacts"
    assert text(popup, ".crmagi-owner-name") == "you"
    link = popup.find_element(By.CSS_SELECTOR, "a.crmagi-record-link").get_attribute("href")
    assert link == "%s/index.php?module=Contacts&action=DetailView&record=%s" % (site.origin, CONTACT)
    edit = popup.find_element(By.CSS_SELECTOR, "a.crmagi-edit-call").get_attribute("href")
    assert edit == "%s/index.php?module=Calls&action=EditView&record=%s" % (site.origin, call.call_id)
    book = [(text(r, ".crmagi-staff-name"), text(r, ".crmagi-staff-ext")) for r in staff_rows(popup)]
    in_db = sorted(("%s %s" % (u["first_name"], u["last_name"]), u["phone_work"]) for u in rows(
        db, "SELECT first_name, last_name, phone_work FROM users WHERE deleted=0 AND status='Active'"
            " AND is_group=0 AND portal_only=0 AND id <> 'seed_sally_id' AND phone_work IS NOT NULL"
            " AND phone_work <> ''"))
    assert book == in_db == PHONE_BOOK
    assert [b.get_attribute("data-crmagi-transfer") for b in popup.find_elements(
        By.CSS_SELECTOR, "tr[data-crmagi-staff] button[data-crmagi-transfer]")] == ["104", "102", "103"]

    # Max's tab, open all along, got nothing; his own call (the sentinel) proves it was listening.
    bernd, latency = ring(browser, max_, app, BERND)
    assert latency < 1000, "popup after %.0f ms" % latency
    assert browser.state(max_)["seen"] == [bernd.call_id]
    assert browser.state(max_)["popups"] == [bernd.call_id]
    assert browser.state(sally)["seen"] == [call.call_id]
    assert text(browser.popup(max_, bernd.call_id), ".crmagi-name") == "Bernd Brandt"


# --- 2 ------------------------------------------------------------------------------------------

def test_two_tabs_of_one_user_get_one_popup_in_the_active_tab(apps, browser, site):
    app = apps()
    first = browser.open(site.page_url(SALLY))
    browser.focus(first)
    second = browser.open(site.page_url(SALLY))       # newer, visible, not focused
    wait_for(lambda: server_tabs(app, SALLY) == [(True, True), (True, False)], what="tab states at the server")
    assert browser.state(first)["focused"] and not browser.state(second)["focused"]

    call, _ = ring(browser, first, app, ANNA)
    assert browser.state(second)["seen"] == [] and browser.state(second)["popups"] == []
    assert browser.state(first)["popups"] == [call.call_id]

    # The user clicks into the other tab: the popup follows, and is in one tab only.
    browser.focus(second)
    browser.wait_popup(second, call.call_id)
    browser.wait(first, lambda s: s["popups"] == [], "popup left the first tab")
    assert received(browser.state(first), "close", call.call_id)

    # That tab is hidden (another application or tab in front): back to the visible, focused one.
    browser.hide(second)
    wait_for(lambda: server_tabs(app, SALLY) == [(True, True), (False, False)], what="second tab hidden")
    browser.wait_popup(first, call.call_id)
    browser.wait(second, lambda s: s["popups"] == [], "popup left the hidden tab")
    assert browser.state(first)["popups"] == [call.call_id]

    # The popup goes back to the second tab; then its socket drops (network, a crmagi restart,
    # Chromium freezing a background tab: freezing above sometimes did) and it comes back
    # hidden.  The server moved the popup to the first tab meanwhile: the second must not
    # keep showing a stale copy.
    browser.show(second)
    browser.wait_popup(second, call.call_id)
    browser.wait(first, lambda s: s["popups"] == [], "popup left the first tab again")
    tab_id = browser.state(second)["sent"][0]["tab"]
    [dropped] = [t for t in app.popups.hub.members("user:" + SALLY) if t.tab_id == tab_id]
    dropped.close()
    browser.hide(second)
    browser.wait_popup(first, call.call_id)
    wait_for(lambda: server_tabs(app, SALLY) == [(True, True), (False, False)], what="second tab back, hidden")
    browser.wait(second, lambda s: s["status"]["state"] == "open" and s["popups"] == [], "no stale popup")
    assert browser.state(first)["popups"] == [call.call_id]
    assert browser.state(second)["sockets"] >= 2


# --- 3 ------------------------------------------------------------------------------------------

def test_tab_opened_10s_after_the_ring_gets_the_popup_one_opened_after_40s_not(apps, browser, site):
    app = apps()                                   # pending_seconds: the default 40 s
    # No sleeping 40 s: the PopupBook's clock is moved forward instead (it reads only this clock).
    clock = app.popups.book.clock = OffsetClock()

    early = AgiCall(app, CARLA)                    # will (103) has no CRM tab open
    early.ring()
    wait_for(lambda: app.popups.book.holds(WILL, early.call_id), what="popup pending for will")
    clock.offset += 10
    will = browser.open(site.page_url(WILL))
    browser.wait_popup(will, early.call_id)
    assert text(browser.popup(will, early.call_id), ".crmagi-name") == "Carla Cortez"

    late = AgiCall(app, DIETER)                    # chris (104) has no CRM tab open either
    late.ring()
    wait_for(lambda: app.popups.book.holds(CHRIS, late.call_id), what="popup pending for chris")
    clock.offset += 41
    chris = browser.open(site.page_url(CHRIS))
    sentinel, _ = ring(browser, chris, app, DIETER)    # a new call does reach the tab
    assert browser.state(chris)["seen"] == [sentinel.call_id]
    assert late.call_id not in browser.state(chris)["popups"]
    assert text(browser.popup(chris, sentinel.call_id), ".crmagi-name") == "Dieter Dorn"


# --- 4 ------------------------------------------------------------------------------------------

def test_hostile_cnam_and_record_name_render_as_text(apps, browser, site):
    app = apps()
    sally = browser.open(site.page_url(SALLY))
    record, _ = ring(browser, sally, app, "+4930666666")      # the CRM record's name is the payload
    linkedid = "1795700000.66"                                # CNAM from the network, as AMI reports it
    cnam_call = CallStore.call_id_for(app.config.agi.system_name, linkedid)
    app.popups.service.post_event({"e": "ring", "call": cnam_call, "linkedid": linkedid, "ext": "101",
                                   "leg": "leg-101", "number": "+4930777777", "name": XSS, "did": DID,
                                   "queue": None})
    browser.wait_popup(sally, cnam_call)
    gevent.sleep(0.3)                          # an <img src=x> would have asked for /x by now
    with pytest.raises(NoAlertPresentException):
        browser.on(sally).switch_to.alert
    state = browser.state(sally)
    assert state["popups"] == [record.call_id, cnam_call]
    assert browser.run(sally, "return document.images.length") == 0
    assert "/x" not in site.requests
    known, unknown = browser.popup(sally, record.call_id), browser.popup(sally, cnam_call)
    assert known.find_elements(By.TAG_NAME, "img") == [] and unknown.find_elements(By.TAG_NAME, "img") == []
    assert text(known, ".crmagi-name") == XSS                  # shown, as text
    assert text(unknown, ".crmagi-cnam-text") == XSS
    for message in received(state, "popup"):
        assert "<img" not in message["html"] and "&lt;img src=x onerror=alert(1)&gt;" in message["html"]


# --- 5 ------------------------------------------------------------------------------------------

def test_bad_tokens_are_refused_and_never_get_a_popup(apps, browser, site, monkeypatch):
    app = apps()
    monkeypatch.setattr(site, "sessions", False)      # and SuiteCRM gives these pages no new token
    hook = site.hook_output(MAX)                              # a token the hook minted for max ("bob")
    bobs = hook[hook.index('"token":"') + 9:].split('"', 1)[0]
    assert auth.verify(SECRET, bobs, time.time()).user_id == MAX
    now = time.time()
    cases = {"bad signature": auth.mint("not-the-secret-" + SECRET, SALLY, now, 600),
             "expired token": auth.mint(SECRET, SALLY, now - 700, 600),
             "token is for another user": bobs}
    refused = {}
    for reason, token in cases.items():
        handle = browser.open(site.page_url(SALLY, token=token), connected=False)
        browser.wait(handle, lambda s: s["status"] and s["status"]["refused"] == reason, "refused: " + reason)
        refused[handle] = reason
    other_origin = browser.open(site.page_url(SALLY, host="localhost"), connected=False)
    browser.wait(other_origin, lambda s: s["status"] and s["status"]["refused"]
                 == "origin http://localhost:%d is not allowed ([webpush] allowed_origins)" % site.port, "origin")
    refused[other_origin] = "origin"
    started = time.monotonic()

    good = browser.open(site.page_url(SALLY))                 # the hook's own token works
    call, _ = ring(browser, good, app, ANNA)
    gevent.sleep(max(0.0, 1.3 - (time.monotonic() - started)))   # popup.js would retry after 1 s
    for handle, reason in refused.items():
        state = browser.state(handle)
        assert state["popups"] == [] and state["seen"] == [] and not received(state, "popup"), reason
        assert state["status"]["state"] == "closed" and state["sockets"] == 1, reason
        assert [m["type"] for m in state["received"]][:1] == ["refused"], reason
        badge = browser.run(handle, "var b = document.getElementById('crmagi-offline'); return b && b.textContent")
        assert badge and "Reload the page" in badge, reason        # the user is told popups stopped
    codes = {reason: [m["code"] for m in browser.state(h)["received"] if m["type"] == "(closed)"]
             for h, reason in refused.items()}
    assert codes == {"bad signature": [4401], "expired token": [4401], "token is for another user": [4401],
                     "origin": [4403]}
    assert browser.state(good)["popups"] == [call.call_id]
    counters = health(app)
    assert (counters["tabs"], counters["accepted"], counters["refused"]) == (1, 1, 4)


# --- 6 ------------------------------------------------------------------------------------------

def test_ring_all_queue_answered_by_one_closes_the_others_popup(apps, browser, site, ami):
    scenario = "05a-queue-ringall"
    app = apps(ami_port=ami.port)
    sally, max_ = browser.open(site.page_url(SALLY)), browser.open(site.page_url(MAX))
    incoming = FakeAsterisk(load_scenario(scenario)).run_session(0, app.agi.address)
    call_id = incoming.variables["CRM_CALL_ID"]
    answer = event_index(scenario, "Event: DialEnd", "DestChannel: Local/101@", "DialStatus: ANSWER")
    connect = event_index(scenario, "Event: AgentConnect")
    ami.play(app, scenario, pauses=(answer, connect))

    for handle in (sally, max_):                             # both phones ring: both users see it
        browser.wait_popup(handle, call_id)
        popup = browser.popup(handle, call_id)
        assert text(popup, ".crmagi-name") == "Anna O'Neil" and text(popup, ".crmagi-queue") == "support"

    ami.release(then_wait=connect)                            # 101 answers, 102 stops ringing
    browser.wait(max_, lambda s: s["popups"] == [], "max's popup closed")
    updates = [(m["state"], m["text"]) for m in received(browser.state(max_), "update", call_id)]
    assert updates == [("answered_elsewhere", "Answered by someone else")]
    assert received(browser.state(max_), "close", call_id)
    browser.wait(sally, lambda s: s["popups"] == [call_id], "sally keeps hers")
    assert browser.popup(sally, call_id).get_attribute("data-crmagi-status") == "answered"
    assert text(browser.popup(sally, call_id), "[data-crmagi-state]") == "In call"

    ami.release()                                             # ... and the call ends
    wait_for(lambda: browser.popup(sally, call_id).get_attribute("data-crmagi-status") == "ended",
             what="sally's popup says the call ended")
    assert browser.state(max_)["seen"] == [call_id]


def test_blind_transfer_moves_the_popup_to_the_new_user(apps, browser, site, ami):
    scenario = "06a-blind-transfer"                           # +4930555555 -> 101 answers -> 104
    app = apps(ami_port=ami.port)
    sally, chris = browser.open(site.page_url(SALLY)), browser.open(site.page_url(CHRIS))
    incoming = FakeAsterisk(load_scenario(scenario)).run_session(0, app.agi.address)
    call_id = incoming.variables["CRM_CALL_ID"]
    transfer = event_index(scenario, "Event: BlindTransfer")
    handler = event_index(scenario, "Event: HangupHandlerRun")
    ami.play(app, scenario, pauses=(transfer, handler))

    browser.wait_popup(sally, call_id)
    wait_for(lambda: browser.popup(sally, call_id).get_attribute("data-crmagi-status") == "answered",
             what="sally answered")
    assert text(browser.popup(sally, call_id), ".crmagi-name") == "Erik Engel"
    assert browser.state(chris)["seen"] == []

    ami.release(then_wait=handler)                            # the transfer to 104, 104 answers
    browser.wait_popup(chris, call_id)
    browser.wait(sally, lambda s: s["popups"] == [], "the popup left sally")
    assert [(m["state"], m["text"]) for m in received(browser.state(sally), "update", call_id)][-1] \
        == ("transferred", "Transferred to Chris Olliver")
    popup = browser.popup(chris, call_id)
    assert text(popup, ".crmagi-name") == "Erik Engel"
    assert popup.get_attribute("data-crmagi-status") == "answered"
    assert ("answered", "Transferred to you") in [
        (m["state"], m["text"]) for m in received(browser.state(chris), "update", call_id)]
    ami.release()


# --- 7 ------------------------------------------------------------------------------------------

def test_phone_book_search_filters_as_you_type_and_transfer_needs_ami(apps, browser, site):
    app = apps()
    sally = browser.open(site.page_url(SALLY))
    call, _ = ring(browser, sally, app, ANNA)
    popup = browser.popup(sally, call.call_id)
    search = popup.find_element(By.CSS_SELECTOR, "input[data-crmagi-search]")
    assert visible_staff(popup) == [name for name, _ in PHONE_BOOK]

    for keys, expected in [("w", ["Will Westin"]), ("est", ["Will Westin"]),
                           (Keys.BACKSPACE * 4, [name for name, _ in PHONE_BOOK]),
                           ("account rep", ["Chris Olliver", "Max Jensen"]),
                           (" senior", ["Chris Olliver"]),
                           (Keys.CONTROL + "a" + Keys.NULL + Keys.BACKSPACE + "104", ["Chris Olliver"]),
                           ("9", []),
                           (Keys.CONTROL + "a" + Keys.NULL + Keys.BACKSPACE + "SALES manager", ["Will Westin"])]:
        search.send_keys(keys)
        assert visible_staff(popup) == expected, (search.get_attribute("value"), expected)

    row = [r for r in staff_rows(popup) if r.is_displayed()][0]
    row.find_element(By.CSS_SELECTOR, "button[data-crmagi-transfer]").click()
    wait_for(lambda: popup.get_attribute("data-crmagi-status") == "transfer_failed", what="transfer result")
    assert text(popup, "[data-crmagi-state]") == "transfer needs the AMI listener ([ami] host)"
    state = browser.state(sally)
    assert {"type": "transfer", "call": call.call_id, "exten": "103"} in state["sent"]
    assert received(state, "result", call.call_id) == [
        {"type": "result", "call": call.call_id, "ok": False,
         "text": "transfer needs the AMI listener ([ami] host)"}]


def test_transfer_button_sends_a_redirect_to_asterisk(apps, browser, site, ami):
    scenario = "06a-blind-transfer"
    app = apps(ami_port=ami.port)
    sally = browser.open(site.page_url(SALLY))
    incoming = FakeAsterisk(load_scenario(scenario)).run_session(0, app.agi.address)
    call_id = incoming.variables["CRM_CALL_ID"]
    ami.play(app, scenario, pauses=(event_index(scenario, "Event: BlindTransfer"),))   # 101 is talking
    browser.wait_popup(sally, call_id)
    popup = browser.popup(sally, call_id)
    wait_for(lambda: popup.get_attribute("data-crmagi-status") == "answered", what="answered")
    popup.find_element(By.CSS_SELECTOR, "input[data-crmagi-search]").send_keys("will")
    [row] = [r for r in staff_rows(popup) if r.is_displayed()]
    row.find_element(By.CSS_SELECTOR, "button[data-crmagi-transfer]").click()

    wait_for(lambda: popup.get_attribute("data-crmagi-status") == "transfer_ok", what="transfer result")
    assert text(popup, "[data-crmagi-state]") == "transferred to 103"
    [redirect] = [a for a in ami.actions if a.get("Action") == "Redirect"]
    assert (redirect.get("Exten"), redirect.get("Context"), redirect.get("Priority")) == ("103", "from-internal", "1")
    assert redirect.get("Channel").startswith("Local/4930123400@from-pstn-")     # the caller's leg


# --- 8 ------------------------------------------------------------------------------------------

def test_hook_output_run_twice_still_gives_one_socket(apps, browser, site):
    app = apps()
    sally = browser.open(site.page_url(SALLY, repeat=2))     # the hook's 3 lines, twice in one page
    assert browser.run(sally, "return document.querySelectorAll('script[src*=\"popup.js\"]').length") == 2
    again = site.hook_output(SALLY)                           # ajaxUI runs a page's scripts once more
    assert browser.on(sally).execute_async_script("""
        var done = arguments[arguments.length - 1], holder = document.createElement('div');
        holder.innerHTML = arguments[0];
        var scripts = holder.querySelectorAll('script'), waiting = 0;
        Array.prototype.forEach.call(scripts, function (old) {
          var fresh = document.createElement('script');
          if (old.src) { waiting++; fresh.onload = function () { if (--waiting === 0) { done(true); } };
                         fresh.onerror = function () { done(false); }; fresh.src = old.src; }
          else { fresh.text = old.text; }
          document.body.appendChild(fresh);
        });
        if (!waiting) { done(false); }""", again) is True
    assert browser.run(sally, "return document.querySelectorAll('script[src*=\"popup.js\"]').length") == 3
    call, _ = ring(browser, sally, app, ANNA)
    state = browser.state(sally)
    assert state["sockets"] == 1 and state["popups"] == [call.call_id] and state["seen"] == [call.call_id]
    assert app.popups.hub.count() == 1 and health(app)["tabs"] == 1
    assert len([m for m in state["sent"] if m["type"] == "hello"]) == 1


def test_a_tab_whose_token_expired_while_away_gets_a_new_one_from_suitecrm(apps, browser, site):
    """A laptop that slept: the token expired; popup.js asks the crmagiToken entry point (session
    cookie) for a new one, reconnects, and the next call pops up."""
    app = apps()
    expired = auth.mint(SECRET, SALLY, time.time() - 700, 600)
    handle = browser.open(site.page_url(SALLY, token=expired), connected=False)
    browser.wait(handle, lambda s: s["status"] and s["status"]["state"] == "open", "reconnected", timeout=10)
    state = browser.state(handle)
    assert [m.get("reason") for m in state["received"] if m["type"] == "refused"] == ["expired token"]
    assert "/index.php" in site.requests
    call, _ = ring(browser, handle, app, ANNA)
    browser.wait_popup(handle, call.call_id)
    assert browser.run(handle, "return document.getElementById('crmagi-offline')") is None
