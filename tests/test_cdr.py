"""The CDR backfill's pure parts on Master.csv bytes recorded from the real Asterisk 22.10.1
(tests/fixtures/cdr/README.md): the CSV parser and the rows -> calls -> Call rules."""
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agi.cdr import calls, csvrows
from agi.fastagi.routes import CallFlow
from crmsync import outcome
from crmsync.calls import CallStore

FIXTURES = Path(__file__).parent / "fixtures" / "cdr"
CONTEXTS = calls.Contexts(inbound=frozenset({"from-pstn"}), outbound=frozenset({"from-internal"}))


def flow(**kw):
    return CallFlow(directory=None, writer=None, call_id_for=CallStore.call_id_for, linker=None, **kw)


def recorded(name):
    rows, problems = csvrows.parse((FIXTURES / ("master-%s.csv" % name)).read_bytes())
    assert problems == []
    return rows


def test_default_columns_parse_to_typed_rows():
    rows = recorded("default")
    assert len(rows) == 16
    dial = next(r for r in rows if r.uniqueid == "1796555706.9" and r.lastapp == "Dial")
    assert (dial.src, dial.dst, dial.dcontext, dial.clid) == ("+4930111111", "4930123400", "from-pstn",
                                                              '"Anna" <+4930111111>')
    assert dial.dstchannel == "Local/104@phones-00000005;1" and dial.lastdata == "Local/104@phones/n,20,t"
    assert dial.start == datetime(2026, 12, 6, 11, 15, 6, tzinfo=timezone.utc)
    assert dial.answer == datetime(2026, 12, 6, 11, 15, 8, tzinfo=timezone.utc)
    assert (dial.duration, dial.billsec, dial.disposition, dial.linkedid) == (5, 3, "ANSWERED", "")
    unanswered = next(r for r in rows if r.disposition == "BUSY" and r.lastapp == "Dial")
    assert unanswered.answer is None and unanswered.key == unanswered.uniqueid == "1796555706.21"


def test_newcdrcolumns_bring_the_linkedid():
    rows = recorded("newcdrcolumns")
    assert len(rows) == 16 and all(r.linkedid for r in rows)
    dial = next(r for r in rows if r.uniqueid == "1796555737.25" and r.lastapp == "Dial")
    assert dial.linkedid == dial.key == "1796555737.24" and dial.userfield == ""


def test_local_times_are_read_in_the_zone_given():
    data = (FIXTURES / "master-default.csv").read_bytes()
    rows, _ = csvrows.parse(data, ZoneInfo("Europe/Berlin"))
    assert rows[0].start == datetime(2026, 12, 6, 10, 15, 6, tzinfo=timezone.utc)


@pytest.mark.parametrize("line, message", [
    (b'"a","b"\n', "2 columns"),
    (b'"","1","2","c","","ch","","Dial","","2026-12-06 11:00:00",,"2026-12-06 11:00:05",5,0,"BUSY","DOC",""\n',
     "no uniqueid"),
    (b'"","1","2","c","","ch","","Dial","","yesterday",,"2026-12-06 11:00:05",5,0,"BUSY","DOC","1.1",""\n',
     "start 'yesterday' is not a time"),
    (b'"","1","2","c","","ch","","Dial","","2026-12-06 11:00:00",,"2026-12-06 11:00:05",x,0,"BUSY","DOC","1.1",""\n',
     "duration 'x'"),
])
def test_a_line_that_is_no_record_is_reported_and_the_rest_read(line, message):
    good = (FIXTURES / "master-default.csv").read_bytes()
    rows, problems = csvrows.parse(good + line)
    assert len(rows) == 16 and len(problems) == 1
    assert problems[0].startswith("line 17: ") and message in problems[0]


@pytest.mark.parametrize("name, key", [("default", "uniqueid"), ("newcdrcolumns", "linkedid")])
def test_the_recorded_calls_come_out_once_each_with_their_facts(name, key):
    found = calls.group(recorded(name), CONTEXTS)
    assert len(found) == 4
    by_number = {(c.direction, c.first.src if c.direction == "Inbound" else c.first.dst): c for c in found}
    assert set(by_number) == {("Inbound", "+4930111111"), ("Inbound", "+4930222222"),
                              ("Outbound", "004930987654"), ("Outbound", "004930987659")}
    for call in found:       # the Local ;1 half (the simulated caller) is not a call of its own
        assert all(row.channel.endswith(";2") for row in call.rows)
        assert call.key == getattr(call.first, key)
    values = {n: calls.hangup_values(c, "/rec.wav") for n, c in by_number.items()}
    anna = values[("Inbound", "+4930111111")]
    assert (anna["DIALSTATUS"], anna["ANSWEREDTIME"], anna["DIALEDTIME"]) == ("ANSWER", "3", "5")
    assert anna["DIALEDPEERNUMBER"].startswith("Local/104@phones-") and anna["MIXMONITOR_FILENAME"] == "/rec.wav"
    bob = values[("Inbound", "+4930222222")]
    assert (bob["DIALSTATUS"], bob["ANSWEREDTIME"], bob["DIALEDTIME"], bob["DIALEDPEERNUMBER"]) == (
        "NOANSWER", "", "20", "")
    assert values[("Outbound", "004930987659")]["DIALSTATUS"] == "BUSY"


def test_a_call_becomes_the_finished_record_the_hangup_rules_make():
    found = {c.first.src: c for c in calls.group(recorded("newcdrcolumns"), CONTEXTS) if c.direction == "Inbound"}
    rec = calls.record_of(found["+4930111111"], flow(system_name="pbx1"), "/var/spool/asterisk/monitor/in-x.wav")
    assert rec.call_id == CallStore.call_id_for("pbx1", "1796555737.24") and rec.linkedid == "1796555737.24"
    assert (rec.direction, rec.number, rec.did, rec.lookup_status) == ("Inbound", "+4930111111", "4930123400",
                                                                         "pending")
    assert rec.started_at == datetime(2026, 12, 6, 11, 15, 37, tzinfo=timezone.utc)
    assert rec.ended_at == datetime(2026, 12, 6, 11, 15, 42, tzinfo=timezone.utc)
    assert (rec.talk_seconds, rec.ring_seconds, rec.answered_extension) == (3, 2, "104")
    assert rec.recording.endswith("in-x.wav") and rec.backfilled
    assert outcome.outcome(rec.direction, rec.dial_status, rec.talk_seconds) == ("Held", "answered")
    assert "Source: Asterisk's CDR (backfilled" in outcome.description(rec)
    missed = calls.record_of(found["+4930222222"], flow())
    assert outcome.outcome(missed.direction, missed.dial_status, missed.talk_seconds) == ("Not Held", "missed")
    outbound = [c for c in calls.group(recorded("default"), CONTEXTS) if c.direction == "Outbound"]
    busy = calls.record_of(next(c for c in outbound if c.first.dst.endswith("9")), flow())
    assert (busy.number, busy.extension, busy.answered_extension) == ("004930987659", "101", None)
    assert outcome.outcome(busy.direction, busy.dial_status, busy.talk_seconds) == ("Not Held", "busy")


def test_internal_calls_and_other_contexts_are_not_calls_to_log():
    rows = recorded("default")
    assert calls.group(rows, calls.Contexts(inbound=frozenset({"queue-in"}), outbound=frozenset())) == []
    internal = calls.group([r for r in rows if r.dcontext == "pstn"],
                           calls.Contexts(inbound=frozenset(), outbound=frozenset({"pstn"})))
    assert internal and all(c.first.dst.startswith("0049") for c in internal)
    short = [c for c in calls.group(rows, CONTEXTS) if c.direction == "Outbound"][0]
    assert calls.is_logged(short, flow())
    assert not calls.is_logged(short, flow(internal_max_digits=20))
    assert calls.is_logged(short, flow(internal_max_digits=20, log_internal=True))


def test_a_tenant_backfills_only_its_own_contexts_and_dids():
    rows = recorded("newcdrcolumns")
    mine = calls.Contexts(inbound=frozenset({"from-pstn"}), outbound=frozenset({"from-internal"}),
                          tenant="acme", tenant_dids=frozenset({"4930123400"}))
    assert {c.direction for c in calls.group(rows, mine)} == {"Inbound"}
    other = calls.Contexts(inbound=frozenset({"from-pstn"}), outbound=frozenset({"from-internal"}),
                           tenant="other", tenant_contexts=frozenset({"from-internal"}))
    assert {c.direction for c in calls.group(rows, other)} == {"Outbound"}


@pytest.mark.parametrize("given, expected", [
    ("2026-12-06T09:30", datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)),
    ("2026-12-06 09:30:15Z", datetime(2026, 12, 6, 9, 30, 15, tzinfo=timezone.utc)),
    ("2026-12-06T10:30+01:00", datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)),
    ("2026-12-06", datetime(2026, 12, 6, tzinfo=timezone.utc)),
])
def test_since_is_utc_unless_it_carries_an_offset(given, expected):
    from agi.cli.backfill import parse_time

    assert parse_time(given) == expected


def cli(tmp_path, ini, *args):
    from click.testing import CliRunner

    from agi.cli import main

    path = tmp_path / "crmagi.ini"
    path.write_text("[crm]\nurl = mysql+pymysql://nobody@127.0.0.1:1/none\n[agi]\nspool = %s\n%s"
                    % (tmp_path / "spool.sqlite", ini))
    return CliRunner().invoke(main, ["backfill", "-c", str(path)] + list(args))


def test_the_command_names_what_is_wrong(tmp_path):
    bad = cli(tmp_path, "", "--since", "yesterday")
    assert bad.exit_code == 2 and "'yesterday' is not an ISO 8601 time" in bad.output
    assert "Missing option '--since'" in cli(tmp_path, "").output
    nothing = cli(tmp_path, "", "--since", "2026-12-06")
    assert nothing.exit_code == 1 and "config [cdr] csv: set csv" in nothing.output
    missing = cli(tmp_path, "[cdr]\ncsv = /nonexistent/Master.csv\n", "--since", "2026-12-06")
    assert missing.exit_code == 1 and "cannot read /nonexistent/Master.csv" in missing.output
    both = cli(tmp_path, "[cdr]\ncsv = /x.csv\nurl = mysql+pymysql://u:p@h/cdr\n", "--since", "2026-12-06")
    assert both.exit_code == 1 and "config [cdr] url: set csv or url, not both" in both.output
    zone = cli(tmp_path, "[cdr]\ntimezone = Mars/Olympus\n", "--since", "2026-12-06")
    assert "config [cdr] timezone: 'Mars/Olympus' is not a time zone" in zone.output
    tenant = cli(tmp_path, "", "--since", "2026-12-06", "--tenant", "acme")
    assert tenant.exit_code == 1 and "--tenant acme: this config has no [tenants] dir" in tenant.output


def test_a_queue_call_is_answered_by_its_member_and_an_internal_call_is_not_logged():
    rows = recorded("queue-internal")
    found = calls.group(rows, calls.Contexts(inbound=frozenset({"queue-in"}), outbound=frozenset({"from-internal"})))
    queue, internal = sorted(found, key=lambda c: c.direction)
    values = calls.hangup_values(queue)
    # Queue() leaves DIALSTATUS empty; the ringall legs overlap: 5 s from the first ring, not 5 + 2
    assert (values["DIALSTATUS"], values["ANSWEREDTIME"], values["DIALEDTIME"]) == ("", "3", "5")
    rec = calls.record_of(queue, flow())
    assert (rec.did, rec.talk_seconds, rec.ring_seconds, rec.answered_extension) == ("4930700100", 3, 2, "101")
    assert outcome.outcome(rec.direction, rec.dial_status, rec.talk_seconds) == ("Held", "answered")
    assert internal.first.dst == "105" and not calls.is_logged(internal, flow())
