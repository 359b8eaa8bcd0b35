"""Calls whose hangup request found crmagi down are kept in AstDB and finished later (agi/fastagi/ended.py).

Tier a: the entry format.  Tier c: the App against MariaDB, with the simulated Asterisk
doing what the dialplan include does when the hangup AGI fails (agi/demo/simulator.py).
"""
from datetime import timezone

import gevent
import pytest

from agi.fastagi import ended
from agi.app import App
from agi.demo.asterisk_commands import Channel
from agi.dialplan import render
from agi.demo.simulator import SimulatedCall
from peer_asterisk import AsteriskPeer, free_port
from test_end_to_end import CONTACT, app_config, call, crmagi_row, db, rows, wait_for  # noqa: F401 (fixture)

ANSWERED = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "75", "DIALEDTIME": "80", "DIALEDPEERNUMBER": "101",
            "MIXMONITOR_FILENAME": "/var/spool/asterisk/monitor/in-x.wav"}


def test_an_entry_is_what_the_dialplan_line_writes():
    chan = Channel("PJSIP/trunk-1", callerid='+49 "30"|1,2', linkedid="1795.1",
                   variables={"CRM_DIRECTION": "Inbound", "CRM_DID": "4930123400", "DIALSTATUS": "ANSWER",
                              "CRM_CALL": "v1|id%7Cx|y"})
    text = chan.expand(ended.dialplan_value())
    entry = ended.parse("1795.1", text)
    assert entry.values["callerid"] == '+49 "30"|1,2' and entry.values["CRM_CALL"] == "v1|id%7Cx|y"
    assert entry.values["CRM_DID"] == "4930123400" and entry.values["DIALEDTIME"] == ""
    assert entry.ended_at.tzinfo is timezone.utc
    assert "," not in text.split("|", 2)[2]          # URIENCODE: nothing that Set() could split on


@pytest.mark.parametrize("text", [None, "", "v2|1|x", "v1|soon" + "|" * len(ended.FIELDS), "garbage"])
def test_foreign_entries_are_not_ours(text):
    assert ended.parse("k", text) is None


def test_keys_cut_by_the_length_limit_wait_for_the_next_request():
    assert ended.parse_keys("1.1,2.2") == ["1.1", "2.2"]
    full = ",".join("%d.%d" % (1795000000 + i, i) for i in range(200))[:ended.KEYS_CHARS]
    keys = ended.parse_keys(full)
    assert full.startswith(",".join(keys) + ",") and all(len(k.split(".")[0]) == 10 for k in keys)
    assert ended.parse_keys("") == [] and ended.parse_keys(None) == []


def start_app(crm_url, tmp_path):
    return App(app_config(crm_url, tmp_path, agi={"timeout": "3"})).start()


def test_a_hangup_while_crmagi_was_down_is_finished_by_the_next_one(db, crm_url, tmp_path):
    astdb = {}
    first = start_app(crm_url, tmp_path)
    address = first.agi.address
    answered = SimulatedCall(address, number="4930123400", callerid="+4930111111", astdb=astdb)
    started = answered.start()
    call_id = started.variables["CRM_CALL_ID"]
    call(db, call_id, status="Planned")
    first.stop(timeout=1)
    # crmagi is down: one call hangs up, another one starts and ends without it.
    assert answered.finish(ANSWERED).agistatus == "FAILURE"
    unseen = SimulatedCall(address, number="4930123400", callerid="+4930111111", astdb=astdb)
    assert unseen.start().agistatus == "FAILURE" and unseen.finish(ANSWERED).agistatus == "FAILURE"
    assert sorted(key for _, key in astdb) == sorted([answered.uniqueid, unseen.uniqueid])
    astdb[(ended.FAMILY, "junk")] = "not ours"
    second = start_app(crm_url, tmp_path)
    try:
        later = SimulatedCall(second.agi.address, number="4930123400", callerid="+4930111111", astdb=astdb)
        assert later.run({"DIALSTATUS": "NOANSWER"})[1].agistatus == "SUCCESS"
        assert astdb == {}                                     # collected, the junk deleted too
        row = call(db, call_id, status="Held")
        assert (row["duration_hours"], row["duration_minutes"]) == (0, 2)    # 75 s, rounded up
        extra = crmagi_row(db, call_id)
        assert extra["talk_seconds"] == 75 and extra["recording"].endswith("in-x.wav")
        assert extra["answered_extension"] == "101"
        rebuilt_id = second.flow.call_id_for("", unseen.uniqueid)
        rebuilt = call(db, rebuilt_id, status="Held")
        assert (rebuilt["parent_type"], rebuilt["parent_id"]) == ("Contacts", CONTACT)
        assert crmagi_row(db, rebuilt_id)["did"] == "4930123400"
        # started = ended - (ring + talk): 80 s before the end the AstDB entry recorded
        assert (rebuilt["date_end"] - rebuilt["date_start"]).total_seconds() in (79, 80, 81)
        wait_for(lambda: second.writer.pending() == 0)
        assert len(rows(db, "SELECT id FROM calls WHERE id IN (:a, :b)", a=call_id, b=rebuilt_id)) == 2
    finally:
        second.stop(timeout=1)


def test_a_hangup_crmagi_could_not_make_durable_stays_in_astdb(db, crm_url, tmp_path):
    """CRM_HANGUP=done only once the end is durable: a spool that fails (or a crmagi killed
    before that point) leaves the include's AstDB copy in place."""
    app = start_app(crm_url, tmp_path)
    astdb = {}
    try:
        broken = SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111", astdb=astdb)
        call(db, broken.start().variables["CRM_CALL_ID"], status="Planned")
        wait_for(lambda: app.writer.pending() == 0)          # nothing of this call waits in the spool
        app.writer.spool.push_ahead = lambda *a, **k: 1 / 0
        assert broken.finish(ANSWERED).agistatus == "SUCCESS"
        assert "CRM_HANGUP" not in broken.channel.vars and list(astdb) == [(ended.FAMILY, broken.uniqueid)]
        fine = SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111", astdb={})
        del app.writer.spool.push_ahead
        fine.run(ANSWERED)
        assert fine.channel.vars["CRM_HANGUP"] == "done" and fine.astdb == {}
    finally:
        app.stop(timeout=1)


def test_concurrent_hangups_share_the_collection_out(db, crm_url, tmp_path):
    astdb, address = {}, ("127.0.0.1", free_port())          # nothing listens: crmagi is down
    missed = [SimulatedCall(address, number="4930123400", callerid="+4930111111", astdb=astdb)
              for _ in range(45)]
    for simulated in missed:
        simulated.start()
        simulated.finish({"DIALSTATUS": "NOANSWER"})
    assert len(astdb) == 45
    app = start_app(crm_url, tmp_path)
    enqueued = []
    enqueue = app.writer.enqueue
    app.writer.enqueue = lambda kind, rec: (enqueued.append(rec.call_id), enqueue(kind, rec))
    try:
        later = [SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111", astdb=astdb)
                 for _ in range(3)]
        for simulated in later:
            simulated.start()
        gevent.joinall([gevent.spawn(s.finish, {"DIALSTATUS": "NOANSWER"}) for s in later])
        while astdb:                                           # 20 per request: a few more calls
            SimulatedCall(app.agi.address, number="4930123400", callerid="+4930111111", astdb=astdb).run()
        assert sorted(enqueued) == sorted(set(enqueued)) and len(enqueued) == 45
        wait_for(lambda: app.writer.pending() == 0, timeout=20)
        assert rows(db, "SELECT COUNT(*) AS n FROM calls WHERE status='Not Held'")[0]["n"] >= 48
    finally:
        app.stop(timeout=1)


E2E_CONTEXT = """
[crmagi-e2e]
exten => _X.,1,Set(CALLERID(num)=+4930111111)
 same => n,Gosub(crmagi-inbound,s,1(${EXTEN}))
 same => n,Hangup()
"""


def test_the_real_asterisk_keeps_the_hangup_in_astdb_and_crmagi_collects_it(db, crm_url, tmp_path):
    """Asterisk 22.10.1 runs the include `crmagi dialplan` prints: with crmagi down, the hangup
    handler's Set(DB(...)) keeps the call; crmagi's next hangup request reads it with DB_KEYS,
    DATABASE GET and DEL on a dead channel, and the first call lands in the CRM too."""
    port = free_port()
    cfg = app_config(crm_url, tmp_path, agi={"listen": "127.0.0.1:%d" % port, "timeout": "3"},
                     dialplan={"owner_dial": "Local/${CRM_OWNER_EXTEN}@phones/n"})
    peer = AsteriskPeer(agi_port=port)
    app = None
    try:
        peer.add_dialplan(render(cfg) + E2E_CONTEXT)
        peer.cli("channel originate Local/4930123400@crmagi-e2e application Wait 1")
        peer.wait_channels_gone()
        (key, value), = peer.astdb(ended.FAMILY).items()
        entry = ended.parse(key, value)
        assert entry is not None, value
        values = entry.values
        assert (values["callerid"], values["CRM_DIRECTION"], values["CRM_DID"]) == (
            "+4930111111", "Inbound", "4930123400")
        assert values["uniqueid"] == key and values["CRM_CALL"] == ""
        assert values["MIXMONITOR_FILENAME"].endswith(".wav")
        app = App(cfg).start()
        peer.cli("channel originate Local/4930123400@crmagi-e2e application Wait 1")
        peer.wait_channels_gone()
        wait_for(lambda: not peer.astdb(ended.FAMILY), timeout=10)
        missed = call(db, app.flow.call_id_for("", values["linkedid"]), status="Not Held")
        assert (missed["parent_type"], missed["parent_id"]) == ("Contacts", CONTACT)
        assert missed["name"].startswith("Missed call from Anna")
        assert crmagi_row(db, missed["id"])["recording"] == values["MIXMONITOR_FILENAME"]
        wait_for(lambda: len(rows(db, "SELECT id FROM calls WHERE parent_id=:p AND status!='Planned'",
                                  p=CONTACT)) == 2, timeout=10)
    finally:
        if app is not None:
            app.stop(timeout=1)
        peer.stop()
