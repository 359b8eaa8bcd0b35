"""Missed calls and call backs on the real peers, in a real headless Chromium.

A demo contact of Sally calls in through the real Asterisk 22.10.1's ``from-pstn``; crmagi's
``incoming`` AGI names Sally as the owner, and her phone is 102, which never answers (20 s).
The real SuiteCRM 7.14.6 then shows the missed call in its own notification bell (the
``alerts`` its Alerts module lists: the count SuiteCRM's alerts.js puts on the bell) and
crmagi's missed-calls list beside the popup shows the caller, the record, the time and the
attempts.  Sally (now at 101, which answers) clicks "Call back" in the list: click-to-call
rings her phone, dials the number, it answers -- and the connected call closes both the
list entry and the alert.  ``CRMAGI_SCREENSHOT=path.png`` saves what Sally sees after the miss.
"""
import base64
import os

import pytest

from browser import chrome, missing_tools, wait_for  # noqa: F401
from conftest import UNDER_CI
from peer_suitecrm import crmagi_on_both, suitecrm_and_asterisk

pytestmark = pytest.mark.skipif(missing_tools() is not None and not UNDER_CI, reason=str(missing_tools()))

DID = "4930123400"
SALLY = "seed_sally_id"
MISSED = """return Array.prototype.map.call(document.querySelectorAll('#crmagi-missed [data-crmagi-missed-entry]'),
    function (n) { return {who: n.querySelector('.crmagi-missed-who').textContent.trim(),
                           number: n.querySelector('.crmagi-missed-number').textContent.trim(),
                           when: n.querySelector('time') ? n.querySelector('time').getAttribute('datetime') : '',
                           attempts: n.querySelector('[data-crmagi-attempts]').getAttribute('data-crmagi-attempts'),
                           record: n.querySelector('.crmagi-callback').getAttribute('data-crmagi-record')}; });"""
BELL = """var count = document.querySelector('.alert_count');
return {count: count && !count.classList.contains('hidden') ? count.textContent.trim() : '0',
        text: (document.querySelector('.desktop_notifications #alerts') || {}).textContent || ''};"""
DIALS = "return window.__crmagiPopup ? window.__crmagiPopup.dials : null;"


@pytest.fixture(scope="module")
def peers():
    yield from suitecrm_and_asterisk({"sally": "102"})      # never answers: her callers are missed


@pytest.fixture(scope="module")
def app(peers, tmp_path_factory):
    application = crmagi_on_both(*peers, tmp_path_factory.mktemp("app"), originate_timeout="10")
    yield application
    application.stop(timeout=1)


def sallys_contact(crm):
    """(id, name, caller ID) of a demo contact of Sally that the peer's pstn answers (not ending
    in 8 or 9) when called back: digits only, which from-internal routes."""
    for record, first, last, phone in crm.sql(
            "SELECT id, first_name, last_name, phone_work FROM contacts WHERE deleted = 0 AND phone_work <> ''"
            " AND assigned_user_id = %s ORDER BY id", SALLY):
        digits = "".join(ch for ch in phone if ch.isdigit())
        if len(digits) >= 10 and digits[-1] not in "89":
            return record, "%s %s" % (first, last), digits
    raise AssertionError("no demo contact of Sally with a usable number")


def open_page(chrome, url):
    page = chrome.open(url, connected=False)
    chrome.wait(page, lambda s: s["status"] and s["status"]["state"] == "open", "welcome on " + url, timeout=30)
    return page


def unread_alerts(crm):
    return crm.sql("SELECT id, name FROM alerts WHERE assigned_user_id = %s AND deleted = 0 AND is_read != 1",
                   SALLY)


def shoot(chrome, page):
    """The ended popup, the list beside it and the bell opened (SuiteCRM's own poll, asked now)."""
    chrome.run(page, "Alerts.prototype.updateManager();")
    wait_for(lambda: chrome.run(page, BELL)["count"] != "0", timeout=10, what="the bell")
    bells = [b for b in chrome.on(page).find_elements("css selector", ".alertsButton") if b.is_displayed()]
    bells[0].click()
    wait_for(lambda: [a for a in chrome.on(page).find_elements("css selector", "#alerts .alert") if a.is_displayed()],
             timeout=5, what="the bell opened")
    screenshot(chrome, page)


def screenshot(chrome, page):
    width, height = chrome.run(page, "return [window.innerWidth, window.innerHeight];")
    shot = chrome.on(page).execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 0.62}})
    data = base64.b64decode(shot["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CRMAGI_SCREENSHOT"):
        with open(os.environ["CRMAGI_SCREENSHOT"], "wb") as handle:
            handle.write(data)


def test_a_call_to_102_is_missed_in_the_bell_and_the_list_and_a_call_back_closes_both(peers, app, chrome):
    crm, asterisk = peers
    record, name, caller = sallys_contact(crm)
    before = unread_alerts(crm)
    chrome.reset()
    crm.login(chrome.driver, "sally")
    page = open_page(chrome, crm.url + "/index.php?module=Home&action=index")
    app.ami.action("Originate", [("Channel", "Local/%s@from-pstn/n" % DID), ("Application", "Wait"),
                                 ("Data", "40"), ("CallerID", caller), ("Async", "true")])
    chrome.wait(page, lambda s: s["popups"], "the popup of the ringing call", timeout=20)
    # 102 rings 20 s and never answers; the call then ends, missed.
    mine = wait_for(lambda: [a for a in unread_alerts(crm) if a not in before], timeout=45,
                    what="the alert of the missed call")
    assert [alert_name for _, alert_name in mine] == ["Missed call: %s (%s)" % (name, caller)]
    assert crm.sql("SELECT user_id, attempts, open FROM crmagi_missed WHERE number = %s", caller) == \
        ((SALLY, 1, 1),)

    listed = wait_for(lambda: chrome.run(page, MISSED), timeout=20, what="the missed-calls list")
    assert [(e["who"], e["number"], e["attempts"], e["record"]) for e in listed] == [(name, caller, "1", record)]
    assert listed[0]["when"].endswith("Z")
    shoot(chrome, page)
    # SuiteCRM's own bell, as a fresh page load shows it (alerts.js asks Alerts/get 2 s after load).
    page = open_page(chrome, crm.url + "/index.php?module=Home&action=index")
    bell = wait_for(lambda: (lambda b: b if b["count"] == str(len(before) + 1) else None)(chrome.run(page, BELL)),
                    timeout=30, what="the bell count %d" % (len(before) + 1))
    assert "Missed call: %s (%s)" % (name, caller) in bell["text"]
    wait_for(lambda: chrome.run(page, MISSED), timeout=10, what="the list after a reload")
    asterisk.wait_channels_gone(timeout=30)

    # Sally moves to 101 (answers after 2 s) and calls back from the list: a connected call.
    crm.set_extension("sally", "101")
    app.directory.users_cache_seconds = 0.0
    wait_for(lambda: (app.directory.user(SALLY).extension or "") == "101", timeout=5, what="Sally at 101")
    chrome.on(page).find_element("css selector", "#crmagi-missed .crmagi-missed-callback").click()
    dial = wait_for(lambda: [d for d in (chrome.run(page, DIALS) or {}).values()
                             if d["state"] in ("refused", "failed", "ended")],
                    timeout=40, what="the call back's end")[0]
    assert (dial["module"], dial["record"], dial["number"]) == ("Contacts", record, caller)
    assert "connected" in dial["states"], dial
    wait_for(lambda: chrome.run(page, MISSED) == [], timeout=20, what="the entry closed in the list")
    assert [a for a in unread_alerts(crm) if a not in before] == []
    assert crm.sql("SELECT attempts, open, closed_by IS NOT NULL FROM crmagi_missed WHERE number = %s",
                   caller) == ((1, None, 1),)
    page = open_page(chrome, crm.url + "/index.php?module=Home&action=index")
    wait_for(lambda: chrome.run(page, BELL)["count"] == str(len(before)), timeout=30,
             what="the bell count back to %d" % len(before))
    # The alert's own link (SuiteCRM's Alerts redirect) opens the contact.
    landed = crm.http("sally").open(crm.url + "/index.php?module=Alerts&action=redirect&record=" + mine[0][0],
                                    timeout=120)
    assert landed.geturl().endswith("index.php?module=Contacts&action=DetailView&record=" + record)
