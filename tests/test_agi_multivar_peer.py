"""Several variables per AGI command, on the real Asterisk 22.10.1 of ../shared/peers.

``incoming`` sets the contract's variables, CALLERID(name) and CRM_CALL in one
``SET VARIABLE ARRAY(...)`` (values backslash-escaped: agi/fastagi/protocol.py); ``hangup``
reads its variables and the AstDB keys in one ``GET FULL VARIABLE`` split on a separator
made for that read.  A record name full of what ARRAY() and the AGI parser treat specially
must reach the dialplan and come back in the hangup request unchanged.
"""
from sqlalchemy import text

from agi.app import App
from agi.dialplan import render
from peer_asterisk import AsteriskPeer, free_port
from test_end_to_end import CONTACT, app_config, call, crmagi_row, db, rows, wait_for  # noqa: F401 (fixture)

FIRST = 'Hans (Berlin, "Mitte") \\'
LAST = "Müller [VIP] ${EVIL} ~a1~ x)y:1:2"

CONTEXT = """
[crmagi-mv]
exten => _X.,1,Set(CALLERID(num)=+4930111111)
 same => n,Set(CHANNEL(hangup_handler_push)=crmagi-hangup,s,1)
 same => n,AGI(agi://127.0.0.1:{port}/incoming,${{EXTEN}})
 same => n,Set(DB(crmagi-mv/status)=${{CRM_STATUS}})
 same => n,Set(DB(crmagi-mv/name)=${{CRM_RECORD_NAME}})
 same => n,Set(DB(crmagi-mv/cidname)=${{CALLERID(name)}})
 same => n,Set(DB(crmagi-mv/owner)=${{CRM_OWNER_EXTEN}})
 same => n,Set(DB(crmagi-mv/module)=${{CRM_MODULE}})
 same => n,Set(DB(crmagi-mv/record)=${{CRM_RECORD_ID}})
 same => n,Hangup()
"""


def test_a_hostile_record_name_reaches_the_dialplan_and_the_hangup_whole(db, crm_url, tmp_path):
    with db.begin() as conn:
        conn.execute(text("UPDATE contacts SET first_name=:f, last_name=:l WHERE id=:id"),
                     dict(f=FIRST, l=LAST, id=CONTACT))
    port = free_port()
    cfg = app_config(crm_url, tmp_path, agi={"listen": "127.0.0.1:%d" % port, "timeout": "3"})
    peer = AsteriskPeer(agi_port=port)
    app = App(cfg).start()
    try:
        name = app.flow.directory.lookup("+4930111111").caller.name
        assert "(Berlin" in name and "${EVIL}" in name and "\\" in name
        peer.add_dialplan(render(cfg) + CONTEXT.format(port=port))
        peer.cli("channel originate Local/4930123400@crmagi-mv application Wait 1")
        peer.wait_channels_gone()
        seen = peer.astdb("crmagi-mv")
        assert seen == {"status": "found", "name": name, "cidname": name[:80], "owner": "101",
                        "module": "Contacts", "record": CONTACT}, seen
        # The hangup request read CRM_CALL (the name packed in it) and the rest in one command.
        ended = wait_for(lambda: rows(db, "SELECT c.id FROM calls c JOIN crmagi_calls k ON k.call_id=c.id "
                                          "WHERE c.parent_id=:p AND k.ended_at IS NOT NULL", p=CONTACT), timeout=10)
        row = call(db, ended[0]["id"])
        assert (row["parent_type"], row["direction"]) == ("Contacts", "Inbound")
        assert crmagi_row(db, row["id"])["hangup_cause"] == "16"
    finally:
        app.stop(timeout=1)
        peer.stop()
