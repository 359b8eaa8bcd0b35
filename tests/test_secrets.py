"""Secrets (DB and Redis passwords, [ami] secret, [webpush] secret) never reach logs or output.

Run through the real failures an admin meets: MariaDB refusing the password,
Asterisk refusing the AMI secret, Redis refusing AUTH, in `crmagi check`, in
the App with its logs captured, and in a `crmagi serve` subprocess.
"""
import io
import logging
import signal
import subprocess
import sys

import gevent
import pytest
from click.testing import CliRunner

from agi import config

from agi.ops import redact
from agi.app import App
from agi.cli import main
from agi.demo.simulator import SimulatedCall
from conftest import MARIADB_HOST, MARIADB_PORT
from crmsync.spool import Spool
from fake_ami import FakeAmi
from test_service import free_port

DB_PASSWORD = "Db-pa55word-x9"           # MariaDB's root has no password here: it refuses this one
AMI_SECRET = "Ami-s3cret-wrong-7"
WEB_SECRET = "Web-s3cret-0123456789abcdef"
REDIS_PASSWORD = "Red1s-pass-q"
SECRETS = (DB_PASSWORD, AMI_SECRET, WEB_SECRET, REDIS_PASSWORD)


def settings(ami_port=None, agi_port=0, spool="spool.sqlite"):
    """INI text whose every secret is wrong for the services it names."""
    ami = ami_port or free_port()
    return ("[crm]\nurl = mysql+pymysql://root:%s@%s:%d/suitecrm\nsite_url = https://crm.example.com/\n"
            "connect_timeout = 1\nquery_timeout = 1\n"
            "[agi]\nlisten = 127.0.0.1:%d\nspool = %s\nflush_interval = 0.2\n"
            "[ami]\nhost = 127.0.0.1\nport = %d\nusername = crm\nsecret = %s\ntimeout = 1\n"
            "[webpush]\nlisten = 127.0.0.1:0\nsecret = %s\nredis_url = redis://:%s@127.0.0.1:6379/0\n"
            # not the default 9108: another crmagi on the box (a benchmark) may hold it
            "[metrics]\nlisten = 127.0.0.1:0\n"
            % (DB_PASSWORD, MARIADB_HOST, MARIADB_PORT, agi_port, spool, ami, AMI_SECRET, WEB_SECRET,
               REDIS_PASSWORD))


def assert_clean(text):
    for secret in SECRETS:
        assert secret not in text
    assert "pa55word" not in text and "s3cret" not in text and "Red1s" not in text


# -- the helper -------------------------------------------------------------------------

def test_secret_settings_are_marked_and_collected(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings().replace(DB_PASSWORD, "p%40ss-word"))
    values = config.secret_values(config.load(str(ini), environ={}))
    assert set(values) == {"p%40ss-word", "p@ss-word", AMI_SECRET, WEB_SECRET, REDIS_PASSWORD}
    marked = {(section, f.name) for section, cls in config.SECTIONS.items()
              for f in config.dataclasses.fields(cls) if f.metadata.get("secret")}
    assert marked == {("crm", "url"), ("ami", "secret"), ("webpush", "secret"), ("webpush", "redis_url"),
                      ("recordings", "remote_url"), ("recordings", "remote_password"), ("cdr", "url")}


@pytest.mark.parametrize("url, shown", [
    ("mysql+pymysql://crm:s3cret@db:3306/suitecrm?charset=utf8mb4", "mysql+pymysql://crm:***@db:3306/suitecrm?charset=utf8mb4"),
    ("mysql+pymysql://crm:p@ss:w@db/suitecrm", "mysql+pymysql://crm:***@db/suitecrm"),
    ("mysql+pymysql://crm@db/suitecrm", "mysql+pymysql://crm@db/suitecrm"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("sqlite:////var/lib/crmagi/demo.sqlite", "sqlite:////var/lib/crmagi/demo.sqlite"),
    ("", ""),
])
def test_mask_url(url, shown):
    assert redact.mask_url(url) == shown


def test_describe_masks_every_secret(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings())
    text = "\n".join(config.describe(config.load(str(ini), environ={})))
    assert_clean(text)
    assert "url = mysql+pymysql://root:***@" in text and "redis_url = redis://:***@127.0.0.1" in text
    assert text.count("secret = ***") == 2


def test_log_filter_masks_messages_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    saved_hook, hub, greenlet_errors = sys.excepthook, gevent.get_hub(), io.StringIO()
    hub.exception_stream = greenlet_errors
    try:
        redact.install([DB_PASSWORD, "abc"])
        log = logging.getLogger("crmagi.test")
        log.warning("connecting to mysql://root:%s@db", DB_PASSWORD)
        try:
            raise RuntimeError("driver said: password %s refused" % DB_PASSWORD)
        except RuntimeError:
            log.exception("startup failed")
        log.warning("abc is too short to be masked")
        crashed = gevent.spawn(_raise, "greenlet saw %s" % DB_PASSWORD)
        crashed.join()
    finally:
        root.removeHandler(handler)
        sys.excepthook = saved_hook
        del hub.exception_stream            # back to gevent's default (sys.stderr)
    out = stream.getvalue()
    assert DB_PASSWORD not in out
    assert "mysql://root:***@db" in out and "driver said: password *** refused" in out
    assert "abc is too short" in out
    printed = greenlet_errors.getvalue()
    assert "greenlet saw ***" in printed and DB_PASSWORD not in printed


def _raise(message):
    raise RuntimeError(message)


# -- through the real failures ----------------------------------------------------------

def test_check_output_never_shows_a_secret(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings())
    result = CliRunner().invoke(main, ["check", "-c", str(ini)])
    assert result.exit_code == 1
    assert "Access denied for user 'root'" in result.output      # the real error is there ...
    assert "mysql+pymysql://root:***@" in result.output
    assert_clean(result.output)                                   # ... the password is not


def test_spool_list_masks_a_secret_in_a_stored_error(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings(spool=tmp_path / "spool.sqlite"))
    spool = Spool(tmp_path / "spool.sqlite")
    spool.bury(spool.push("start", {"call_id": "call-a"}), "driver: bad password %s" % DB_PASSWORD)
    spool.close()
    result = CliRunner().invoke(main, ["spool", "list", "-c", str(ini)])
    assert result.exit_code == 0 and "last error: driver: bad password ***" in result.output
    assert_clean(result.output)


def test_lookup_error_never_shows_a_secret(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings())
    result = CliRunner().invoke(main, ["lookup", "-c", str(ini), "+4930111111"])
    assert result.exit_code == 1 and "unavailable" in result.output
    assert_clean(result.output)


def wait_for(predicate, seconds=15):
    deadline = gevent.get_hub().loop.now() + seconds
    while not predicate():
        assert gevent.get_hub().loop.now() < deadline
        gevent.sleep(0.05)


def test_app_logs_no_secret_when_db_ami_and_redis_refuse(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    ami = FakeAmi(secret="the-right-one").start()
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings(ami_port=ami.port, spool=tmp_path / "spool.sqlite"))
    app = App(config.load(str(ini), environ={})).start()
    try:
        first, _ = SimulatedCall(app.agi.address, "incoming", number="4930123400",
                                 callerid="+4930111111").run(dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "3"})
        assert first.variables["CRM_STATUS"] == "error"
        wait_for(lambda: "Authentication failed" in caplog.text and "Access denied" in caplog.text)
    finally:
        app.stop(timeout=1)
        ami.stop()
    assert any(a.get("Secret") == AMI_SECRET for a in ami.actions)   # it was sent to Asterisk ...
    assert_clean(caplog.text)                                        # ... and nowhere else


def test_serve_stderr_has_no_secret(tmp_path):
    ami = FakeAmi(secret="the-right-one").start()
    port = free_port()
    ini = tmp_path / "crmagi.ini"
    ini.write_text(settings(ami_port=ami.port, agi_port=port, spool=tmp_path / "spool.sqlite"))
    proc = subprocess.Popen([sys.executable, "-m", "agi.cli", "serve", "-v", "-c", str(ini)],
                            stderr=subprocess.PIPE, text=True)
    try:
        result = None
        for _ in range(100):
            result = SimulatedCall(("127.0.0.1", port), "incoming", number="4930123400",
                                   callerid="+4930111111").start()
            if result.agistatus == "SUCCESS":
                break
            gevent.sleep(0.1)
        assert result.variables.get("CRM_STATUS") == "error"
        wait_for(lambda: sum(a.get("Action") == "Login" for a in ami.actions) >= 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        errors = proc.communicate(timeout=30)[1]
        ami.stop()
    assert "Authentication failed" in errors and "Access denied" in errors, errors
    assert_clean(errors)
