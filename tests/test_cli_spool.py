"""`crmagi spool list|retry|drop` and the spool part of `crmagi check`, on real spool files."""
from click.testing import CliRunner

from agi.cli import main
from agi.config import load
from agi.ops.spoolfiles import spool_paths, volatile_reason
from crmsync.spool import Spool
from test_cli import ini


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def filled_spool(path):
    spool = Spool(path)
    start = spool.push("start", {"call_id": "call-a", "direction": "Inbound", "number": "+4930111111",
                                 "linkedid": "1795699120.0"})
    finish = spool.push("finish", {"call_id": "call-a", "direction": "Inbound", "number": "+4930111111"})
    spool.push("live", {"call_id": "call-b", "kind": "transferred", "extension": "103"})
    spool.bury(start, "(1054, \"Unknown column 'x' in 'field list'\")")
    spool.close()
    return start, finish


def test_list_retry_drop(tmp_path):
    path = ini(tmp_path, "mysql+pymysql://root@127.0.0.1:1/suitecrm")
    start, finish = filled_spool(tmp_path / "spool.sqlite")
    listed = run("spool", "list", "-c", path)
    assert listed.exit_code == 0, listed.output
    assert "2 pending, 1 dead" in listed.output
    assert "Unknown column 'x'" in listed.output and "+4930111111" in listed.output
    assert "transferred 103" in listed.output
    assert run("spool", "retry", "-c", path).exit_code == 2              # neither an id nor --all
    assert run("spool", "retry", "-c", path, "999").exit_code == 1
    again = run("spool", "retry", "-c", path, str(start))
    assert again.exit_code == 0 and "1 op(s) queued again" in again.output
    spool = Spool(tmp_path / "spool.sqlite")
    assert [op.id for op in spool.heads()][0] == start and spool.dead() == []
    spool.close()
    dropped = run("spool", "drop", "-c", path, str(finish))
    assert dropped.exit_code == 0 and "dropped pending op %d" % finish in dropped.output
    assert run("spool", "drop", "-c", path, str(finish)).exit_code == 1


def test_check_reports_depth_and_fails_on_dead_letters(tmp_path):
    path = ini(tmp_path, "mysql+pymysql://root@127.0.0.1:1/suitecrm")
    empty = run("check", "-c", path)
    assert "spool %s: empty (no file yet)" % (tmp_path / "spool.sqlite") in empty.output
    filled_spool(tmp_path / "spool.sqlite")
    result = run("check", "-c", path)                 # the CRM is down too: the spool still reports
    assert result.exit_code == 1
    assert "2 pending, oldest" in result.output and "1 dead letter(s)" in result.output
    assert "ERROR [agi] spool: 1 write(s)" in result.output and "crmagi spool list" in result.output


def test_volatile_spool_locations_are_named(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\ntmpfs /srv/ram tmpfs rw 0 0\n")
    assert "under /tmp" in volatile_reason("/tmp/crmagi-spool.sqlite", str(mounts))
    assert "tmpfs file system" in volatile_reason("/srv/ram/x/s.sqlite", str(mounts))
    assert volatile_reason("/var/lib/crmagi/crmagi-spool.sqlite", str(mounts)) is None


def test_check_warns_about_a_spool_in_tmp(tmp_path):
    path = ini(tmp_path, "mysql+pymysql://root@127.0.0.1:1/suitecrm", "[agi]\nspool = /tmp/crmagi-x.sqlite\n")
    assert "WARNING [agi] spool: /tmp/crmagi-x.sqlite is under /tmp" in run("check", "-c", path).output


def test_every_worker_spool_is_read(tmp_path):
    cfg = load(None, environ={}, overrides={"agi": {"workers": "2", "spool": str(tmp_path / "s.sqlite")}})
    assert spool_paths(cfg) == [str(tmp_path / "s.w0.sqlite"), str(tmp_path / "s.w1.sqlite")]
