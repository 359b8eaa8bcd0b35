"""Issue #11 section 2: `crmagi users` -- devices, agent ids, popups on/off, last seen."""
import json
import time
from datetime import datetime

import pytest
import websocket
from click.testing import CliRunner

from agi.app import App
from agi.cli import main
from crmsync.userprefs import UserPrefs
from test_cli import ini
from test_end_to_end import app_config, db, wait_for  # noqa: F401 (db: the seeded CRM fixture)
from webpush import auth

SECRET = "users-test-secret-0123456789abcdefgh"
ORIGIN = "http://crm.example.com"


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_set_and_list_devices_agents_popups(db, crm_url, tmp_path):
    path = ini(tmp_path, crm_url)
    done = cli("users", "set", "-c", path, "sally", "--devices", "201, 202", "--agents", "1001", "--popups", "off")
    assert done.exit_code == 0, done.output
    listed = cli("users", "list", "-c", path).output
    sally = next(line for line in listed.splitlines() if line.startswith("seed_sally_id"))
    assert "101" in sally and "201,202" in sally and "1001" in sally and " off " in sally
    clash = cli("users", "set", "-c", path, "max", "--devices", "201")
    assert clash.exit_code == 1 and "201 already belongs to sally" in clash.output
    taken = cli("users", "set", "-c", path, "max", "--devices", "101")          # sally's CRM extension
    assert taken.exit_code == 1 and "101 already belongs to sally" in taken.output
    assert cli("users", "set", "-c", path, "nobody", "--popups", "on").exit_code == 1
    assert cli("users", "set", "-c", path, "max", "--devices", "20 1").exit_code == 1


def test_a_device_or_agent_id_is_the_user_and_popups_off_is_quiet(db, crm_url, tmp_path):
    UserPrefs(db).set("seed_sally_id", devices=("201",), agents=("1001",))
    UserPrefs(db).set("seed_max_id", popups=False)
    app = App(app_config(crm_url, tmp_path, webpush={"secret": SECRET, "listen": "127.0.0.1:0",
                                                     "allowed_origins": ORIGIN})).start()
    try:
        assert app.directory.user_by_extension("201").id == "seed_sally_id"
        assert app.directory.user_by_extension("1001").id == "seed_sally_id"
        assert app.directory.user_by_extension("101").id == "seed_sally_id"
        rung = []
        ring = app.popups.service.book.ring
        app.popups.service.book.ring = lambda info, user, leg: (rung.append(user.id), ring(info, user, leg))
        for ext in ("201", "102"):                       # 102 is max's: his popups are off
            app.popups.service.post_event({"e": "ring", "call": "c-" + ext, "linkedid": "l-" + ext,
                                           "ext": ext, "number": "+4930111111"})
        wait_for(lambda: app.popups.service.queue.qsize() == 0)
        time.sleep(0.2)
        assert rung == ["seed_sally_id"]
        # last seen: a tab of sally connects
        ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % app.popups.server.address[1], origin=ORIGIN,
                                         timeout=5)
        ws.send(json.dumps({"type": "hello", "token": auth.mint(SECRET, "seed_sally_id", time.time(), 600)}))
        assert json.loads(ws.recv())["type"] == "welcome"
        seen = wait_for(lambda: UserPrefs(db).load()["seed_sally_id"].last_seen_at)
        assert abs((seen - datetime.utcnow()).total_seconds()) < 120
        ws.close()
    finally:
        app.stop(timeout=1)
