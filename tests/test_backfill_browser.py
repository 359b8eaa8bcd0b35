"""A call crmagi missed (it was down), backfilled from the real Asterisk's Master.csv with
`crmagi backfill`, shows in the History subpanel of its contact in the real SuiteCRM 7.14.6,
in Chromium (the README's screenshot, docs/backfill-history.png, when CRMAGI_SCREENSHOTS names
a folder)."""
import os
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from agi.cli import main
from browser import chrome, missing_tools, wait_for  # noqa: F401 (fixture)
from conftest import missing
from peer_asterisk import AsteriskPeer, free_port
from peer_suitecrm import SuiteCrmPeer
from test_backfill_peer import originate

SALLY = "seed_sally_id"


@pytest.fixture(scope="module")
def peers():
    if missing_tools():
        missing(missing_tools())
    asterisk = AsteriskPeer(free_port())           # its AGI server, crmagi, is down all along
    crm = None
    try:
        crm = SuiteCrmPeer()
        crm.set_extension("sally", "101")
        yield asterisk, crm
    finally:
        asterisk.stop()
        if crm is not None:
            crm.stop()


def test_a_backfilled_call_is_in_the_contacts_history(peers, chrome, tmp_path):
    asterisk, crm = peers
    since = datetime.now(timezone.utc).replace(microsecond=0)
    contact, first, last, phone = crm.sql(
        "SELECT id, first_name, last_name, phone_work FROM contacts WHERE deleted = 0 AND assigned_user_id = %s"
        " AND phone_work <> '' ORDER BY id LIMIT 1", SALLY)[0]
    number = "+1" + "".join(ch for ch in phone if ch.isdigit())
    originate(asterisk, "Local/4930123400@from-pstn/n", '"%s %s" <%s>' % (first, last, number))
    originate(asterisk, "Local/4930123400@from-pstn/n", '"%s %s" <%s>' % (first, last, number), timeout_ms=1000)
    asterisk.wait_channels_gone()
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = %s\n[agi]\nspool = %s\n[lookup]\ndefault_region = US\n[cdr]\ncsv = %s\n"
                   % (crm.db_url, tmp_path / "spool.sqlite", asterisk.dir / "var/log/asterisk/cdr-csv/Master.csv"))
    done = CliRunner().invoke(main, ["backfill", "-c", str(ini), "--since", since.isoformat()])
    assert done.exit_code == 0 and "2 call(s) in the CDR: 2 written" in done.output, done.output
    calls = crm.sql("SELECT c.id, c.name, c.status, c.description FROM calls c JOIN calls_contacts l "
                    "ON l.call_id = c.id AND l.deleted = 0 WHERE l.contact_id = %s ORDER BY c.status", contact)
    assert [status for _, _, status, _ in calls] == ["Held", "Not Held"]
    assert all("backfilled" in description for _, _, _, description in calls)
    crm.login(chrome.driver, "sally")
    page = chrome.open(crm.url + "/index.php?module=Contacts&action=DetailView&record=" + contact, connected=False)
    chrome.on(page).find_element("css selector", "#subpanel_title_history").click()
    for call_id, name, _, _ in calls:       # its row is shown (SuiteCRM may render the subpanel twice)
        wait_for(lambda: chrome.run(page, SHOWN, call_id, name[:30]), timeout=30,
                 what="call %s in the History subpanel" % call_id)
    shots = os.environ.get("CRMAGI_SCREENSHOTS")
    if shots:
        chrome.on(page).set_window_size(1600, 900)
        wait_for(lambda: chrome.run(page, SHOWN, calls[0][0], calls[0][1][:30]), timeout=10, what="shown again")
        panel = chrome.on(page).find_element("css selector", "#whole_subpanel_history")
        panel.screenshot(os.path.join(shots, "backfill-history.png"))


# The row of a call (its link holds the id) is on screen and reads its subject.
SHOWN = """var links = document.querySelectorAll('#list_subpanel_history a[href*="' + arguments[0] + '"]');
for (var i = 0; i < links.length; i++) {
    var row = links[i].closest('tr');
    if (row && row.offsetHeight > 0 && row.innerText.indexOf(arguments[1]) >= 0) return true;
}
return false;"""
