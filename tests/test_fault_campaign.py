"""Tier c: the fault campaign (bench/faults.py) in small, and the defects it found, each
reproduced on its own.

The campaign starts its own MariaDB (Debian's mariadbd, a temp datadir) and `crmagi serve`,
places calls for half a minute while it kills, stops and locks the database, kills crmagi
(also while the database hangs on writes) and drops the AMI link, then checks every call in
SuiteCRM.  Shorter outages than the
bench defaults keep it under a minute.
"""
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import gevent
from gevent.event import Event

from conftest import REPO
from crmsync.models import CallRecord
from crmsync.spool import Spool
from crmsync.writer import CallWriter

MARIADBD = os.environ.get("CRMAGI_MARIADBD", "/usr/sbin/mariadbd")
EVERY_FAULT = {"db-kill", "crmagi-kill", "db-lock", "ami-drop", "db-stop", "down-crash"}


def test_calls_survive_every_fault_exactly_once_on_the_right_record(tmp_path):
    assert os.path.exists(MARIADBD), "the fault campaign needs mariadbd (apt-get install mariadb-server)"
    report_path = tmp_path / "faults.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "faults.py"), "--rate", "10", "--duration", "32",
         "--db-stop-seconds", "4", "--lock-seconds", "3", "--down-crash-after", "2.5", "--records", "50",
         "--drain", "30", "--json", str(report_path)],
        cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=150)
    assert report_path.exists(), run.stdout[-3000:]
    report = json.loads(report_path.read_text())
    verdict = report["verdict"]
    assert set(report["faults_by_kind"]) == EVERY_FAULT, run.stdout[-3000:]
    assert verdict["placed"] == 10 * 32 and verdict["not_run"] == 0
    assert verdict["crmagi_down_in"] > 0 and verdict["rebuilt_logged"] > 0   # the hangup AGI logged them
    assert (verdict["missing"], verdict["duplicated"], verdict["wrong"]) == (0, 0, 0), run.stdout[-3000:]
    assert verdict["over_timeout"] == 0, run.stdout[-3000:]
    assert verdict["written"] == verdict["placed"]
    assert report["spool_left"] == 0 and run.returncode == 0


def test_the_campaigns_mariadb_has_a_tmpdir_of_its_own(tmp_path):
    """Every start of mariadbd (and the install's bootstrap) deletes the '#sql*' files in its
    tmpdir.  With the default, /tmp, each start and restart of the campaign's server deleted
    the on-disk internal temporary tables of the shared server under other runs' queries
    ("#sql-temptable-..." errors, seen in tests/test_phoneindex.py)."""
    sys.path.insert(0, str(REPO / "bench"))
    from faults_db import PrivateMariaDB

    db = PrivateMariaDB(tmp_path / "db")
    try:
        db.install()
        conn = db.connect("mysql")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@tmpdir")
                tmpdir = Path(cur.fetchone()[0])
        finally:
            conn.close()
        assert db.folder in tmpdir.parents, tmpdir
    finally:
        db.stop()


class _HungStore:
    """A CRM database that takes the connection and never answers (a lock, a hung server)."""

    def __init__(self):
        self.release = Event()

    def start(self, rec):
        self.release.wait()

    finish = start


def test_a_write_waiting_on_a_hung_database_is_already_durable(tmp_path):
    """Found by the campaign's down-crash: an op kept only in memory while CallWriter.submit
    waited up to [crm] query_timeout for the database was lost on kill -9."""
    store = _HungStore()
    writer = CallWriter(store, Spool(tmp_path / "spool.sqlite"), timeout=5.0)
    rec = CallRecord(call_id="c0ffee00-0000-5000-8000-000000000001", linkedid="1796000000.1",
                     uniqueid="1796000000.1", direction="Inbound", number="+4930111111",
                     started_at=datetime.now(timezone.utc), lookup_status="found")
    pending = gevent.spawn(writer.submit, "start", rec)
    gevent.sleep(0.3)                      # the write is in flight; kill -9 here must lose nothing
    try:
        assert len(Spool(tmp_path / "spool.sqlite")) == 1
    finally:
        store.release.set()
        pending.join(5)
