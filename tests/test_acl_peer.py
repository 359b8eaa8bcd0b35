"""Popups that respect SuiteCRM's access rights, on the real SuiteCRM 7.14.6 in headless Chromium.

The roles and the security group are written the way SuiteCRM stores them (tests/acl_rows.py),
before anyone logs in (SuiteCRM keeps a user's ACL in the PHP session).  For each case the
real SuiteCRM is asked first (the record's DetailView in Chromium: the record, or SuiteCRM's
"You do not have access" page), then the popup of a call from that record must agree:

- sally holds a role that denies viewing Contacts: SuiteCRM refuses her own contact, and her
  popup shows "Contacts", "a record you cannot open" and the phone book, nothing of the record;
- chris's only role comes through a security group, view "Group": the group holds one
  unassigned contact (he sees it, in SuiteCRM and in the popup) and not another (he sees neither);
- the admin holds the denying role too and still sees everything.

Without AMI the popup goes to the record's responsible user, and to ``fallback_extensions``
(chris, 104) for the unassigned ones.  ``CRMAGI_SCREENSHOTS=DIR`` keeps sally's popup as
DIR/popup-restricted.png (docs/).
"""
import base64
import os
import time

import pytest

import acl_rows
from acl_rows import GROUP, NONE
from browser import AgiCall, chrome, missing_tools  # noqa: F401
from conftest import UNDER_CI
from peer_suitecrm import SuiteCrmPeer, crmagi_on_peer

pytestmark = pytest.mark.skipif(missing_tools() is not None and not UNDER_CI, reason=str(missing_tools()))
NO_ACCESS = "You do not have access to this area"


class Record:
    def __init__(self, peer, record_id):
        first, last, phone = peer.sql("SELECT first_name, last_name, phone_work FROM contacts WHERE id = %s",
                                      record_id)[0]
        self.id, self.name = record_id, "%s %s" % (first, last)
        self.number = "+1" + "".join(ch for ch in phone if ch.isdigit())
        self.url = peer.url + "/index.php?module=Contacts&action=DetailView&record=" + record_id


def contacts_of(peer, owner, count):
    return [Record(peer, row[0]) for row in peer.sql(
        "SELECT id FROM contacts WHERE deleted = 0 AND assigned_user_id = %s AND phone_work <> ''"
        " ORDER BY id LIMIT %s", owner, count)]


@pytest.fixture(scope="module")
def peer():
    crm = SuiteCrmPeer()
    for user, extension in (("sally", "101"), ("chris", "104"), ("admin", "105")):
        crm.set_extension(user, extension)
    yield crm
    crm.stop()


@pytest.fixture(scope="module")
def records(peer):
    sally = contacts_of(peer, "seed_sally_id", 1)[0]
    grouped, outside = contacts_of(peer, "seed_will_id", 2)
    admins = contacts_of(peer, "seed_max_id", 1)[0]
    for record in (grouped, outside):
        peer.sql("UPDATE contacts SET assigned_user_id = '', created_by = '1' WHERE id = %s", record.id)
    peer.sql("UPDATE contacts SET assigned_user_id = '1' WHERE id = %s", admins.id)
    no_contacts = acl_rows.role(peer.sql, "crmagi test: no contacts", "Contacts", view=NONE)
    for user in ("seed_sally_id", "1"):
        acl_rows.give_role(peer.sql, no_contacts, user)
    team = acl_rows.role(peer.sql, "crmagi test: team contacts", "Contacts", view=GROUP)
    acl_rows.group(peer.sql, "crmagi test team", users=["seed_chris_id"], records=[("Contacts", grouped.id)],
                   roles=[team])
    return {"sally": sally, "grouped": grouped, "outside": outside, "admin": admins}


@pytest.fixture(scope="module")
def app(peer, records, tmp_path_factory):
    application = crmagi_on_peer(peer, tmp_path_factory.mktemp("app"), webpush={"fallback_extensions": "104"})
    yield application
    application.stop(timeout=1)


def suitecrm_shows(peer, chrome, record):
    """True when the real SuiteCRM shows the record to the logged-in user, False when it refuses."""
    driver = chrome.driver
    driver.switch_to.window(chrome.home)
    driver.get(record.url)
    html = driver.page_source
    driver.get("about:blank")           # the home window is no tab of the user
    if NO_ACCESS in html:
        assert record.name not in html
        return False
    assert record.name in html, html[:2000]
    return True


def popup_of(peer, app, chrome, record):
    """The popup element of a call from ``record``, in a Home page of the logged-in user."""
    page = chrome.open(peer.url + "/index.php?module=Home&action=index")
    call = AgiCall(app, record.number)
    result = call.ring()
    # The call itself is routed and logged on its record whatever the user may view.
    assert (result.variables["CRM_MODULE"], result.variables["CRM_RECORD_ID"]) == ("Contacts", record.id)
    chrome.wait_popup(page, call.call_id, timeout=10)
    return page, call, chrome.popup(page, call.call_id)


def login(peer, chrome, user):
    chrome.reset()
    peer.login(chrome.driver, user)


def shows_record(popup, record):
    text = popup.get_attribute("textContent")
    classes = popup.get_attribute("class").split()
    links = [a.get_attribute("href") or "" for a in popup.find_elements("css selector", "a")]
    if "crmagi-restricted" in classes:
        assert "Contacts" in text and "a record you cannot open" in text
        assert record.name not in text and not any(record.id in link for link in links)
        assert not popup.find_elements("css selector", ".crmagi-history")
        return False
    assert "crmagi-known" in classes and record.name in text
    assert any("record=" + record.id in link for link in links)
    return True


def both_agree(peer, app, chrome, record, shown):
    """SuiteCRM shows the record to the logged-in user (or not), and so does the popup of its call."""
    assert suitecrm_shows(peer, chrome, record) is shown
    page, call, popup = popup_of(peer, app, chrome, record)
    assert shows_record(popup, record) is shown
    return page, call, popup


def test_a_role_that_denies_viewing_contacts(peer, records, app, chrome):
    login(peer, chrome, "sally")
    page, call, popup = both_agree(peer, app, chrome, records["sally"], False)
    # The call still works: the edit-call link and the phone book, without sally herself.
    assert popup.find_elements("css selector", "a.crmagi-edit-call")
    names = [td.get_attribute("textContent") for td in popup.find_elements("css selector", ".crmagi-staff-name")]
    assert "Chris Olliver" in names and "Sally Bronsen" not in names, names
    assert popup.find_elements("css selector", 'button[data-crmagi-transfer="104"]')
    shots = os.environ.get("CRMAGI_SCREENSHOTS")
    if shots:                                # what sally sees: the popup over SuiteCRM's Home, with its top bar
        time.sleep(4)
        data = chrome.on(page).execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "clip": {"x": 640, "y": 0, "width": 760, "height": 430, "scale": 1}})["data"]
        with open(os.path.join(shots, "popup-restricted.png"), "wb") as handle:
            handle.write(base64.b64decode(data))
    call.hangup()


def test_a_security_group_that_holds_the_record(peer, records, app, chrome):
    login(peer, chrome, "chris")
    for record, shown in ((records["grouped"], True), (records["outside"], False)):
        both_agree(peer, app, chrome, record, shown)[1].hangup()


def test_an_admin_sees_the_record_whatever_the_role(peer, records, app, chrome):
    login(peer, chrome, "admin")
    both_agree(peer, app, chrome, records["admin"], True)[1].hangup()
