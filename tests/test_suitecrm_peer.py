"""The call popup in the real SuiteCRM 7.14.6 (../shared/peers), in a real headless Chromium.

The package goes in with webpush/installer.py and Quick Repair and Rebuild, exactly as an
admin installs it; sally logs in through SuiteCRM's login form; an inbound call from one of
her demo contacts must pop up in the contact page she has open, with the contact's name
and a link to the record, and nowhere for a user who does not own the caller.
"""
import gevent
import pytest

from browser import AgiCall, chrome, missing_tools, wait_for  # noqa: F401
from conftest import UNDER_CI
from peer_suitecrm import SuiteCrmPeer, crmagi_on_peer

pytestmark = pytest.mark.skipif(missing_tools() is not None and not UNDER_CI, reason=str(missing_tools()))


@pytest.fixture(scope="module")
def peer():
    crm = SuiteCrmPeer()
    crm.set_extension("sally", "101")
    crm.set_extension("chris", "104")
    yield crm
    crm.stop()


@pytest.fixture(scope="module")
def app(peer, tmp_path_factory):
    application = crmagi_on_peer(peer, tmp_path_factory.mktemp("app"))
    yield application
    application.stop(timeout=1)


def contact_of(peer, owner):
    """(id, name, office phone) of a demo contact with an office phone, assigned to ``owner``."""
    rows = peer.sql("SELECT id, first_name, last_name, phone_work FROM contacts WHERE deleted = 0"
                    " AND assigned_user_id = %s AND phone_work <> '' ORDER BY id LIMIT 1", owner)
    return rows[0][0], "%s %s" % (rows[0][1], rows[0][2]), rows[0][3]


def test_the_real_suitecrm_page_loads_the_script_and_gets_the_popup_of_its_own_caller(peer, app, chrome):
    record, name, phone = contact_of(peer, "seed_sally_id")
    digits = "".join(ch for ch in phone if ch.isdigit())
    peer.login(chrome.driver, "sally")
    page = chrome.open(peer.url + "/index.php?module=Contacts&action=DetailView&record=" + record)
    html = chrome.on(page).page_source
    assert 'href="tel:%s"' % phone in html                 # SuiteCRM's own phone markup is on the page
    call = AgiCall(app, "+1" + digits)
    result = call.ring()
    assert result.variables["CRM_MODULE"] == "Contacts" and result.variables["CRM_RECORD_ID"] == record
    chrome.wait_popup(page, call.call_id, timeout=10)
    popup = chrome.popup(page, call.call_id)
    assert name in popup.text
    links = [a.get_attribute("href") for a in popup.find_elements("css selector", "a")]
    assert any("record=" + record in (href or "") for href in links), links
    call.hangup()


def test_a_page_of_another_user_gets_no_popup_of_sallys_caller(peer, app, chrome):
    record, _, phone = contact_of(peer, "seed_sally_id")
    chrome.reset()
    peer.login(chrome.driver, "chris")
    page = chrome.open(peer.url + "/index.php?module=Home&action=index")
    call = AgiCall(app, "+1" + "".join(ch for ch in phone if ch.isdigit()))
    call.ring()
    wait_for(lambda: app.popups.book.stats["popups"] >= 2, timeout=5)    # sally's popup is out ...
    gevent.sleep(1.0)
    state = chrome.state(page)
    assert state["status"]["state"] == "open" and call.call_id not in state["seen"]     # ... not here
    call.hangup()
