"""The CRM in the user's language, date format and time zone, on the real SuiteCRM 7.14.6, in Chromium.

Sally's profile says Russian (``ru_RU``), ``d.m.Y H:i`` and Europe/Moscow -- written by
SuiteCRM's own code (User::setPreference + savePreferencesToDB, tests/php/
set_user_preferences.php), so crmagi reads exactly the bytes SuiteCRM keeps.  The site's
default language is German ([crm] default_language = de_DE).  A call from one of her
contacts pops up in her real SuiteCRM page in Russian, with her format and zone; its
history is what SuiteCRM's own History subpanel of that contact lists; a click on the
popup's call-back link is answered in Russian; the Call row's subject is German.
``CRMAGI_SCREENSHOT_I18N=path.png`` also saves what Sally sees (docs/popup-ru.png).
"""
import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from browser import AgiCall, chrome, missing_tools, wait_for, PHP  # noqa: F401
from conftest import UNDER_CI
from peer_suitecrm import SuiteCrmPeer, crmagi_on_peer

pytestmark = pytest.mark.skipif(missing_tools() is not None and not UNDER_CI, reason=str(missing_tools()))

SET_PREFERENCES = Path(__file__).resolve().parent / "php" / "set_user_preferences.php"
SALLY = "seed_sally_id"
HISTORY_MODULES = ("Calls", "Meetings", "Tasks", "Notes", "Emails")
STATUS = "return window.__crmagiPopup ? {state: window.__crmagiPopup.state, lang: window.__crmagiPopup.lang} : null;"


def set_preferences(crm, user_id, **prefs):
    done = subprocess.run([PHP, str(SET_PREFERENCES), str(crm.dir), user_id, json.dumps(prefs)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "saved" in done.stdout, done.stdout + done.stderr


@pytest.fixture(scope="module")
def crm():
    peer = SuiteCrmPeer()
    try:
        peer.set_extension("sally", "101")
        set_preferences(peer, SALLY, language="ru_RU", datef="d.m.Y", timef="H:i", timezone="Europe/Moscow")
        contact, phone = peer.sql("SELECT id, phone_work FROM contacts WHERE deleted = 0 AND phone_work <> ''"
                                  " ORDER BY id LIMIT 1")[0]
        peer.sql("UPDATE contacts SET assigned_user_id = %s WHERE id = %s", SALLY, contact)
        seed_history(peer, contact)
        peer.contact, peer.phone = contact, "".join(ch for ch in phone if ch.isdigit())
        yield peer
    finally:
        peer.stop()


def seed_history(crm, contact):
    """Beside the demo task and email: a held call (History), a planned one (Activities) and one
    linked only by its parent (in no subpanel of a contact: docs/suitecrm.md section 4)."""
    for call_id, status, when, linked in (("i18n-held", "Held", "2026-11-20 09:30:00", True),
                                          ("i18n-planned", "Planned", "2026-11-21 09:30:00", True),
                                          ("i18n-parent", "Held", "2026-11-22 09:30:00", False)):
        crm.sql("INSERT INTO calls (id, name, date_entered, date_modified, deleted, status, direction, date_start,"
                " duration_hours, duration_minutes, parent_type, parent_id) VALUES"
                " (%s, %s, %s, %s, 0, %s, 'Inbound', %s, 0, 5, 'Contacts', %s)",
                call_id, "Call " + call_id, when, when, status, when, contact)
        if linked:
            crm.sql("INSERT INTO calls_contacts (id, call_id, contact_id, required, accept_status, date_modified,"
                    " deleted) VALUES (%s, %s, %s, '1', 'none', %s, 0)", "cc-" + call_id, call_id, contact, when)


@pytest.fixture(scope="module")
def app(crm, tmp_path_factory):
    application = crmagi_on_peer(crm, tmp_path_factory.mktemp("app"), crm={"default_language": "de_DE"})
    yield application
    application.stop(timeout=1)


def suitecrm_history(crm, contact):
    """(module, id) of each row of the contact's History subpanel, as SuiteCRM renders it for Sally."""
    html = crm.page(crm.http("sally"), "sugar_body_only=1&module=Contacts&subpanel=history&action=SubPanelViewer"
                    "&inline=1&record=%s&layout_def_key=Contacts&ajaxSubpanel=true" % contact)
    return set(re.findall(r"module=(%s)&(?:amp;)?action=DetailView&(?:amp;)?record=([\w-]+)"
                          % "|".join(HISTORY_MODULES), html))


def test_a_russian_user_sees_the_popup_in_russian_in_her_format_and_zone(crm, app, chrome):
    chrome.reset()
    crm.login(chrome.driver, "sally")
    page = chrome.open(crm.url + "/index.php?module=Home&action=index", connected=False)
    wait_for(lambda: (chrome.run(page, STATUS) or {}).get("state") == "open", timeout=30, what="welcome")
    assert chrome.run(page, STATUS)["lang"] == "ru"
    call = AgiCall(app, crm.phone)
    call.ring()
    chrome.wait_popup(page, call.call_id, timeout=10)
    popup = chrome.popup(page, call.call_id)

    def text(css):          # as written (CSS may upper-case what it shows)
        return popup.find_element("css selector", css).get_attribute("textContent").strip()

    assert text(".crmagi-direction") == "Входящий звонок"
    assert text(".crmagi-module") == "Контакты"
    assert text(".crmagi-callback") == "Перезвонить"
    assert text(".crmagi-edit-call") == "Изменить этот звонок"
    assert [h.text for h in popup.find_elements("css selector", "h3.crmagi-heading")] == \
        ["История с этим клиентом", "Телефонная книга"]
    # Her format and zone: 09:30 UTC is 12:30 in Moscow.
    held = popup.find_element("css selector", '[data-crmagi-rec-call="i18n-held"]')
    assert held.find_element("css selector", "time").text == "20.11.2026 12:30"
    assert held.find_element("css selector", ".crmagi-kind").text == "Звонок"
    assert held.find_element("css selector", ".crmagi-status").text == "Состоялся"
    for when in popup.find_elements("css selector", "time"):
        assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d", when.text), when.text

    # The history is SuiteCRM's History subpanel: no planned call, no call linked by parent alone.
    links = [a.get_attribute("href") for a in popup.find_elements("css selector", "a.crmagi-history-link")]
    shown = {re.search(r"module=(\w+)&action=DetailView&record=([\w-]+)", href).groups() for href in links}
    expected = suitecrm_history(crm, crm.contact)
    assert ("Calls", "i18n-held") in expected and ("Calls", "i18n-planned") not in expected
    assert shown == expected, (shown, expected)

    # A click-to-call message in Russian too (no AMI and no plugin PBX here: refused, saying why).
    popup.find_element("css selector", ".crmagi-callback").click()
    item = wait_for(lambda: chrome.on(page).find_elements("css selector", "#crmagi-dial .crmagi-dial-text"),
                    timeout=10, what="the click-to-call box")[0]
    wait_for(lambda: item.text != "просим crmagi позвонить…", timeout=10, what="the answer to the click")
    assert item.text == "ни одна подключённая АТС не обслуживает ваш номер 101"

    shot = chrome.on(page).execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    data = base64.b64decode(shot["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CRMAGI_SCREENSHOT_I18N"):
        with open(os.environ["CRMAGI_SCREENSHOT_I18N"], "wb") as handle:
            handle.write(data)

    # The Call row's subject follows the site's default language (German here), not Sally's.
    call.hangup({"DIALSTATUS": "NOANSWER", "ANSWEREDTIME": ""})
    rows = wait_for(lambda: crm.sql("SELECT name, status FROM calls WHERE id = %s AND status <> 'Planned'",
                                    call.call_id), timeout=10, what="the ended Call")
    assert rows[0][1] == "Not Held" and rows[0][0].startswith("Verpasster Anruf von "), rows
    assert len(rows[0][0]) <= 50
