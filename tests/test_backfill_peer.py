"""Tier c: the CDR backfill on the real Asterisk 22.10.1 and MariaDB (issue #13, section 3).

crmagi sees one call, is stopped, and misses four (inbound answered, inbound abandoned while
ringing, outbound answered, outbound busy); started again it reads the peer's own Master.csv
(default columns, or with newcdrcolumns) and each missed call appears once, on its record.
"""
import socket
import time

import gevent
import pytest
from click.testing import CliRunner

from agi.app import App
from agi.cli import main
from peer_asterisk import AsteriskPeer, free_port
from test_end_to_end import CONTACT, CONTACT_102, LEAD, app_config, db, rows, wait_for  # noqa: F401 (fixture)

HISTORY = {"Contacts": "SELECT c.* FROM calls c JOIN calls_contacts l ON l.call_id=c.id AND l.deleted=0 "
                       "WHERE l.contact_id=:rid AND c.deleted=0 AND c.status IN ('Held','Not Held')",
           "Leads": "SELECT c.* FROM calls c JOIN calls_leads l ON l.call_id=c.id AND l.deleted=0 "
                    "WHERE l.lead_id=:rid AND c.deleted=0 AND c.status IN ('Held','Not Held')"}


def originate(peer, channel, callerid, timeout_ms=30000):
    """AMI Originate of a Local channel running Wait(3) once answered; ``timeout_ms``: the
    caller gives up (hangs up) if nobody answered by then."""
    with socket.create_connection(("127.0.0.1", peer.ami_port), timeout=10) as sock:
        def send(**headers):
            sock.sendall("".join("%s: %s\r\n" % item for item in headers.items()).encode() + b"\r\n")
        send(Action="Login", Username="crm", Secret="crmsecret", Events="off")
        send(Action="Originate", Channel=channel, Application="Wait", Data="3", CallerID=callerid,
             Timeout=str(timeout_ms), Async="true")
        send(Action="Logoff")
        while sock.recv(4096):
            pass


def missed_calls(peer):
    """The four calls placed while crmagi is down, all at once."""
    originate(peer, "Local/4930123400@from-pstn/n", '"Anna" <+4930111111>')
    originate(peer, "Local/4930123400@from-pstn/n", '"Bernd" <+4930222222>', timeout_ms=1000)
    originate(peer, "Local/004930987654@from-internal/n", '"Alice" <101>')
    originate(peer, "Local/004930987659@from-internal/n", '"Alice" <101>')
    time.sleep(1)
    peer.wait_channels_gone()


def config(crm_url, tmp_path, peer, port):
    return app_config(crm_url, tmp_path, agi={"listen": "127.0.0.1:%d" % port, "timeout": "3"},
                      cdr={"csv": str(peer.dir / "var/log/asterisk/cdr-csv/Master.csv")},
                      recordings={"local_dir": str(peer.dir / "var/spool/asterisk/monitor")})


@pytest.mark.parametrize("columns", ["default", "newcdrcolumns"])
def test_calls_placed_while_crmagi_was_down_appear_once_on_their_records(db, crm_url, tmp_path, columns):
    port = free_port()
    peer = AsteriskPeer(agi_port=port)
    app = None
    try:
        if columns == "newcdrcolumns":
            conf = peer.dir / "etc/asterisk/cdr.conf"
            conf.write_text(conf.read_text().replace("[csv]", "[csv]\nnewcdrcolumns = yes"))
            peer.cli("module reload cdr_csv.so")
        cfg = config(crm_url, tmp_path, peer, port)
        app = App(cfg).start()
        originate(peer, "Local/4930123400@from-pstn/n", '"Anna" <+4930111111>')       # crmagi sees this one
        peer.wait_channels_gone()
        wait_for(lambda: rows(db, "SELECT 1 FROM calls WHERE status='Held'"), timeout=10)
        app.stop(timeout=1)
        app = None
        missed_calls(peer)
        app = App(cfg).start()
        app.backfill.join(30)
        report = app.backfill.value
        # On a busy MariaDB a write may take longer than [crm] query_timeout: it is spooled, then flushed.
        assert (report.calls, report.seen, report.written + report.spooled) == (5, 1, 4), report
        wait_for(lambda: app.writer.pending() == 0, timeout=30)
        logged = rows(db, "SELECT m.*, c.name, c.status, c.parent_type, c.parent_id, c.description, "
                          "c.duration_minutes FROM crmagi_calls m JOIN calls c ON c.id=m.call_id")
        assert len(logged) == 5 and sum(1 for r in logged if r["backfilled"]) == 4
        anna = rows(db, HISTORY["Contacts"], rid=CONTACT)
        assert sorted(r["status"] for r in anna) == ["Held", "Held"]                  # seen once + backfilled once
        bernd, = rows(db, HISTORY["Contacts"], rid=CONTACT_102)
        assert bernd["status"] == "Not Held" and bernd["name"].startswith("Missed call from Bernd")
        assert bernd["direction"] == "Inbound" and "backfilled" in bernd["description"]
        lead, = rows(db, HISTORY["Leads"], rid=LEAD)
        assert (lead["status"], lead["direction"], lead["duration_minutes"]) == ("Held", "Outbound", 1)
        back = {r["number"]: r for r in logged if r["backfilled"]}
        assert back["004930987659"]["outcome"] == "busy" and back["004930987659"]["extension"] == "101"
        assert back["+4930111111"]["talk_seconds"] == 3 and back["+4930111111"]["answered_extension"] == "104"
        monitor = str(peer.dir / "var/spool/asterisk/monitor")          # [recordings] monitor_dir = local_dir
        assert back["+4930111111"]["recording"].startswith(monitor + "/in-")
        assert back["+4930111111"]["recording"].endswith("-%s.wav" % back["+4930111111"]["uniqueid"])
        assert back["004930987654"]["recording"].startswith(monitor + "/out-")
        again = CliRunner().invoke(main, ["backfill", "-c", ini(tmp_path, cfg), "--since", "2000-01-01T00:00:00Z"])
        assert again.exit_code == 0, again.output
        assert "5 call(s) in the CDR: 0 written, 0 spooled until the CRM takes them, 5 crmagi had" in again.output
        assert len(rows(db, "SELECT 1 FROM calls WHERE status != 'Planned' AND name LIKE '%%call%%'")) >= 5
        assert len(rows(db, "SELECT 1 FROM crmagi_calls")) == 5
    finally:
        if app is not None:
            app.stop(timeout=1)
        peer.stop()


def ini(tmp_path, cfg):
    path = tmp_path / "crmagi.ini"
    path.write_text("[crm]\nurl = %s\n[agi]\nspool = %s\n[lookup]\ndefault_region = DE\n[cdr]\ncsv = %s\n"
                    "[recordings]\nlocal_dir = %s\n" % (cfg.crm.url, tmp_path / "cli-spool.sqlite", cfg.cdr.csv,
                                                        cfg.recordings.local_dir))
    return str(path)
