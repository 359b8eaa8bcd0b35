"""Issue #11 section 1: two tenants on one crmagi, each with its own SuiteCRM database.

Pure rules first (which tenant a request is, the folder's validation), then the real
thing: a TenantServer with two tenants on two MariaDB databases holding the SAME
contact numbers (so a call written to the wrong CRM would find a record there too),
calls interleaved, popup tokens and plugin keys of one tenant tried on the other, and a
reload that adds and removes tenants while calls are in progress.
"""
import http.client
import os
import signal
import textwrap
import time
import uuid
from datetime import datetime

import gevent
import gevent.event
import pytest
import websocket

from agi import config as config_mod
from agi.errors import ConfigError
from agi.fastagi.protocol import AgiEnv
from agi.demo.simulator import SimulatedCall
from agi.tenants import dispatch, registry
from agi.tenants.server import TenantServer
from conftest import create_suitecrm_database, drop_database, mariadb_url
from crmsync.apikeys import KeyStore
from crmsync.calls import CallStore
from test_end_to_end import CONTACT, SEED, rows, seeded, wait_for
from webpush import auth, recording_urls

SECRETS = {"acme": "acme-secret-0123456789abcdefghijklmn", "globex": "globex-secret-0123456789abcdefghijk",
           "initech": "initech-secret-0123456789abcdefghij"}


def env(script, context="crmagi-inbound", arg="4930123400"):
    return AgiEnv(network_script=script, context=context, arg_1=arg, dnid=arg, extension="s")


# -- which tenant (pure) -----------------------------------------------------------------------

def test_the_path_then_a_claimed_context_then_a_claimed_did_name_the_tenant():
    claims = dispatch.Claims({"from-acme": "acme"}, {"4930999000": "globex"})
    names = {"acme", "globex"}
    assert dispatch.pick(env("globex/incoming", "from-acme"), names, claims)[:2] == ("globex", "incoming")
    assert dispatch.pick(env("hangup", "from-acme"), names, claims)[:2] == ("acme", "hangup")
    assert dispatch.pick(env("incoming", arg="4930999000"), names, claims)[:2] == ("globex", "incoming")
    nobody = dispatch.pick(env("incoming", arg="4930111000"), names, claims)
    assert nobody.tenant is None and "4930111000" in nobody.why
    assert dispatch.pick(env("initech/incoming"), names, claims).tenant is None
    # a DID claims inbound requests only: an outbound call to that number is not the tenant's
    assert dispatch.pick(env("outgoing", arg="4930999000"), names, claims).tenant is None


# -- the folder ------------------------------------------------------------------------------------

def write(folder, name, text):
    path = os.path.join(str(folder), name + ".ini")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(text))
    return path


def main_config(tmp_path, folder, **agi):
    text = "[tenants]\ndir = %s\n[agi]\nlisten = 127.0.0.1:0\nspool = %s\n[webpush]\nlisten = 127.0.0.1:0\n" \
           "[metrics]\nlisten = 127.0.0.1:0\n" % (folder, tmp_path / "main-spool.sqlite")
    path = tmp_path / "main.ini"
    path.write_text(text)
    return config_mod.load(str(path), environ={})


def test_a_tenant_file_may_not_set_a_server_wide_key_and_claims_do_not_overlap(tmp_path):
    folder = tmp_path / "tenants"
    folder.mkdir()
    main = main_config(tmp_path, folder)
    write(folder, "acme", "[crm]\nurl = mysql+pymysql://a@h/a\n[agi]\nlisten = 0.0.0.0:4573\n")
    with pytest.raises(ConfigError, match=r"acme.ini \[agi\] listen: server-wide"):
        registry.load_folder(main)
    write(folder, "acme", "[crm]\nurl = mysql+pymysql://a@h/a\n[tenant]\ncontexts = from-pstn\n")
    write(folder, "globex", "[crm]\nurl = mysql+pymysql://g@h/g\n[tenant]\ncontexts = from-pstn\n")
    with pytest.raises(ConfigError, match="tenants acme and globex both claim the context from-pstn"):
        registry.load_folder(main)
    write(folder, "globex", "[crm]\nurl = mysql+pymysql://g@h/g\n")
    write(folder, "Bad Name", "[crm]\nurl = x\n")
    with pytest.raises(ConfigError, match="the name must match"):
        registry.load_folder(main)
    os.remove(os.path.join(str(folder), "Bad Name.ini"))
    tenants = registry.load_folder(main)
    spools = {tenant.config.agi.spool for tenant in tenants.values()}
    assert len(spools) == 2 and main.agi.spool not in spools          # each tenant its own spool
    assert {t.config.agi.listen for t in tenants.values()} == {main.agi.listen}


# -- two tenants, two CRMs -------------------------------------------------------------------------

@pytest.fixture
def two_crms(crm_url):
    other = create_suitecrm_database()
    engines = {"acme": seeded(crm_url, SEED), "globex": seeded(mariadb_url(other), SEED)}
    yield {"acme": crm_url, "globex": mariadb_url(other)}, engines
    for engine in engines.values():
        engine.dispose()
    drop_database(other)


def tenant_file(folder, name, url, tmp_path, extra=""):
    return write(folder, name, """\
        [crm]
        url = %s
        query_timeout = 5
        [agi]
        timeout = 3
        spool = %s
        flush_interval = 0.2
        [lookup]
        default_region = DE
        [webpush]
        secret = %s
        allowed_origins = http://crm.%s.example
        """ % (url, tmp_path / ("%s-spool.sqlite" % name), SECRETS[name], name) + extra)


@pytest.fixture
def server(two_crms, tmp_path):
    urls, _ = two_crms
    folder = tmp_path / "tenants"
    folder.mkdir()
    for name in ("acme", "globex"):
        tenant_file(folder, name, urls[name], tmp_path)
    running = TenantServer(main_config(tmp_path, folder)).start()
    for app in running.apps.values():
        app._warm_up()
    yield running, folder
    running.stop(timeout=1)


def test_each_call_lands_in_its_own_tenants_crm_only(server, two_crms):
    running, _ = server
    _, engines = two_crms
    calls = {}
    jobs = []
    for index in range(10):
        name = ("acme", "globex")[index % 2]
        call = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                             prefix=name + "/")
        jobs.append(gevent.spawn(call.run, {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "7"}))
        calls.setdefault(name, []).append(call)
    gevent.joinall(jobs, raise_error=True)
    for job in jobs:
        start, end = job.value
        assert start.variables["CRM_STATUS"] == "found" and start.variables["CRM_RECORD_ID"] == CONTACT
    for name, engine in engines.items():
        other = "globex" if name == "acme" else "acme"
        mine = {c.uniqueid for c in calls[name]}
        theirs = {c.uniqueid for c in calls[other]}
        written = wait_for(lambda: {r["linkedid"] for r in rows(engine, "SELECT linkedid FROM crmagi_calls "
                                                                       "WHERE status='Held'")} >= mine or None,
                           timeout=10)
        assert written is not None
        found = {r["linkedid"] for r in rows(engine, "SELECT linkedid FROM crmagi_calls")}
        assert found == mine and not found & theirs


def test_a_request_for_no_tenant_answers_error_at_once(server):
    running, _ = server
    result = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                           prefix="initech/").start()
    assert result.variables == {"CRM_STATUS": "error"} and result.server_closed
    plain = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111").start()
    assert plain.variables == {"CRM_STATUS": "error"}


def test_tokens_and_keys_of_one_tenant_open_nothing_of_the_other(server):
    running, _ = server
    port = running.web.address[1]
    token = auth.mint(SECRETS["acme"], "seed_sally_id", time.time(), 600)
    answers = {}
    for name in ("acme", "globex"):
        ws = websocket.create_connection("ws://127.0.0.1:%d/%s/ws" % (port, name),
                                         origin="http://crm.%s.example" % name, timeout=5)
        ws.send('{"type":"hello","token":"%s","tab":"t1"}' % token)
        answers[name] = ws.recv()
        ws.close()
    assert '"welcome"' in answers["acme"]
    assert '"refused"' in answers["globex"] and "bad signature" in answers["globex"]
    _, key = KeyStore(running.apps["acme"].engine, "acme").create("pbx", "lookup")
    for name, expected in (("acme", '"welcome"'), ("globex", "unknown key")):
        ws = websocket.create_connection("ws://127.0.0.1:%d/%s/plugin" % (port, name), timeout=5,
                                         suppress_origin=True)
        ws.send('{"type":"hello","version":1,"key":"%s"}' % key)
        assert expected in ws.recv()
        ws.close()


def test_sighup_adds_and_removes_tenants_without_dropping_the_others_calls(server, two_crms, tmp_path):
    running, folder = server
    urls, engines = two_crms
    ringing = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                            prefix="acme/")
    assert ringing.start().variables["CRM_STATUS"] == "found"
    os.remove(os.path.join(str(folder), "globex.ini"))
    tenant_file(folder, "initech", urls["globex"], tmp_path)
    os.kill(os.getpid(), signal.SIGHUP)
    wait_for(lambda: "initech" in running.apps, timeout=10)
    assert set(running.apps) == {"acme", "initech"} and "globex" in running.draining
    ringing.finish({"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "3"})          # acme's call goes on
    wait_for(lambda: rows(engines["acme"], "SELECT status FROM crmagi_calls WHERE linkedid=:l",
                          l=ringing.uniqueid) == [{"status": "Held"}], timeout=10)
    late = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                         prefix="globex/")
    assert late.start().variables == {"CRM_STATUS": "error"}            # removed: no new calls
    new = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                        prefix="initech/")
    assert new.start().variables["CRM_STATUS"] == "found"


def test_a_reload_mid_traffic_drops_no_call_of_any_tenant(server, two_crms, tmp_path):
    """Calls of both tenants keep arriving (each rings 0.3 s) while SIGHUP removes globex and
    adds initech: every call that acme, globex or initech took is finished in its own CRM,
    globex's calls under way included (a draining tenant still takes their hangups); a
    globex call placed after the reload is refused at once."""
    running, folder = server
    urls, engines = two_crms
    taken = {"acme": [], "globex": [], "initech": []}
    refused = []
    reloaded_before_hangup = []

    def one_call(name):
        call = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                             prefix=name + "/")
        first = call.start()
        if first.variables.get("CRM_STATUS") != "found":
            refused.append((name, first.variables))
            return
        taken[name].append(call.uniqueid)
        gevent.sleep(0.3)
        # Its tenant was removed while it rang.  Not "initech has appeared": the reload drains
        # globex first and builds initech after, which on a busy box outlasted every ring.
        if name == "globex" and "globex" not in running.apps:
            reloaded_before_hangup.append(call.uniqueid)
        assert call.finish({"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "3"}).agistatus == "SUCCESS"

    def traffic(stop):
        jobs = []
        while not stop.is_set():
            names = ("acme", "initech") if "initech" in running.apps else ("acme", "globex")
            jobs += [gevent.spawn(one_call, name) for name in names]
            gevent.sleep(0.05)
        return jobs

    # Counted, not timed: the reload comes once globex has calls behind it, and the traffic
    # stops once initech has taken its own, however long a busy box takes to place them.
    stop = gevent.event.Event()
    background = gevent.spawn(traffic, stop)
    wait_for(lambda: len(taken["globex"]) >= 5 and len(taken["acme"]) >= 10, timeout=30)
    os.remove(os.path.join(str(folder), "globex.ini"))
    tenant_file(folder, "initech", urls["globex"], tmp_path)
    os.kill(os.getpid(), signal.SIGHUP)
    wait_for(lambda: len(taken["initech"]) >= 5 and len(taken["acme"]) >= 20, timeout=30)
    stop.set()
    jobs = background.get()
    gevent.joinall(jobs, raise_error=True)
    assert all(name == "globex" for name, _ in refused)    # only globex calls raced the reload
    assert reloaded_before_hangup, "no globex call was under way across the reload"
    held = {name: lambda engine=engine: {r["linkedid"] for r in rows(
        engine, "SELECT linkedid FROM crmagi_calls WHERE status='Held'")} for name, engine in engines.items()}
    wait_for(lambda: held["acme"]() == set(taken["acme"]), timeout=15)
    wait_for(lambda: held["globex"]() == set(taken["globex"]) | set(taken["initech"]), timeout=15)
    late = SimulatedCall(running.address, "incoming", number="4930123400", callerid="+4930111111",
                         prefix="globex/")
    assert late.start().variables == {"CRM_STATUS": "error"}


def test_a_recording_plays_at_its_tenants_path_only(two_crms, tmp_path):
    """A tenant's recordings are served under /NAME/recordings/ (recordings.js takes the base
    from the tenant's /NAME/ws URL) from that tenant's own folder; its signed URL opens
    nothing at another tenant's path."""
    from test_recordings_http import tone_wav

    urls, engines = two_crms
    folder = tmp_path / "tenants"
    folder.mkdir()
    calls = {}
    for name in ("acme", "globex"):
        monitor = tmp_path / ("monitor-" + name)
        monitor.mkdir()
        tone_wav(monitor / ("%s-call.wav" % name))
        tenant_file(folder, name, urls[name], tmp_path, "[recordings]\nlocal_dir = %s\n" % monitor)
        calls[name] = recorded_call(engines[name], "%s/%s-call.wav" % (monitor, name))
    running = TenantServer(main_config(tmp_path, folder)).start()
    try:
        port = running.web.address[1]
        for name, other in (("acme", "globex"), ("globex", "acme")):
            path = recording_urls.mint(SECRETS[name], "seed_sally_id", calls[name], time.time(), 600)
            status, body = http_get(port, "/%s%s" % (name, path))
            assert status == 200 and body[:4] == b"RIFF"
            assert http_get(port, "/%s%s" % (other, path))[0] == 403
            assert http_get(port, path)[0] == 404                   # no tenant in the path
    finally:
        running.stop(timeout=1)


def recorded_call(engine, recording):
    CallStore(engine).ensure_tables()
    call_id = str(uuid.uuid4())
    now = datetime.utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO calls (id, name, date_entered, date_modified, deleted, assigned_user_id, status,"
            " direction, date_start) VALUES (%s, 'test call', %s, %s, 0, 'seed_sally_id', 'Held', 'Inbound', %s)",
            (call_id, now, now, now))
        conn.exec_driver_sql("INSERT INTO crmagi_calls (call_id, recording, status) VALUES (%s, %s, 'Held')",
                             (call_id, recording))
    return call_id


def http_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_metrics_carry_the_tenant_label(server):
    import urllib.request

    running, _ = server
    port = running.monitor.address[1]
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    assert 'tenant="acme"' in text and 'tenant="globex"' in text
    assert text.count("# TYPE crmagi_spool_pending") <= 1


def test_commands_take_the_tenant(server, two_crms, tmp_path):
    from click.testing import CliRunner

    from agi.cli import main

    running, folder = server
    path = str(tmp_path / "main.ini")

    def cli(*args):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    include = cli("dialplan", "-c", path, "--tenant", "globex")
    assert include.exit_code == 0, include.output
    assert "/globex/incoming," in include.output and "[crmagi-inbound-globex]" in include.output
    assert "DB(crmagi_ended_globex/" in include.output
    assert cli("dialplan", "-c", path, "--tenant", "nobody").exit_code == 1
    created = cli("keys", "create", "-c", path, "--tenant", "globex", "--name", "pbx", "--scope", "lookup")
    assert created.exit_code == 0, created.output
    key_id = created.output.split()[2]
    assert key_id in cli("keys", "list", "-c", path, "--tenant", "globex").output
    assert key_id not in cli("keys", "list", "-c", path, "--tenant", "acme").output
    crm = tmp_path / "suitecrm"
    (crm / "include").mkdir(parents=True)
    (crm / "include" / "entryPoint.php").write_text("<?php\n")
    (crm / "sugar_version.php").write_text("<?php\n")
    installed = cli("suitecrm", "install", "-c", path, "--tenant", "acme", str(crm))
    assert installed.exit_code == 0, installed.output
    hook = (crm / "custom/include/Crmagi/config.php").read_text()
    assert "/acme/ws" in hook and SECRETS["acme"] in hook and SECRETS["globex"] not in hook
    checked = cli("check", "-c", path)
    assert "tenant acme:" in checked.output and "tenant globex:" in checked.output


def test_each_tenant_follows_its_own_asterisk(two_crms, tmp_path):
    """Two fake Asterisks, one per tenant; acme claims the recorded calls' context: the
    recorded blind transfer (AGI + AMI) lands in acme's CRM with its transfer, globex's
    CRM and AMI connection see nothing of it."""
    from asterisk_replay import FakeAsterisk, load_scenario
    from fake_ami import FakeAmi, recorded_events
    from test_end_to_end import INBOUND

    urls, engines = two_crms
    amis = {name: FakeAmi().start() for name in ("acme", "globex")}
    folder = tmp_path / "tenants"
    folder.mkdir()
    for name in ("acme", "globex"):
        claim = "[tenant]\ncontexts = from-pstn, crm-hangup\n" if name == "acme" else ""
        tenant_file(folder, name, urls[name], tmp_path, "[ami]\nhost = 127.0.0.1\nport = %d\nusername = crm\n"
                    "secret = crmsecret\ninbound_contexts = %s\ntimeout = 2\n%s" % (amis[name].port, INBOUND, claim))
    running = TenantServer(main_config(tmp_path, folder)).start()
    try:
        for app in running.apps.values():
            app._warm_up()
            assert app.ami.connected.wait(5)
        fake = FakeAsterisk(load_scenario("06a-blind-transfer"))
        start = fake.run_session(0, running.address)
        assert start.variables["CRM_STATUS"] == "found"
        acme = running.apps["acme"]
        amis["acme"].events = recorded_events("06a-blind-transfer")
        acme.ami._sock.close()                   # the fake streams the recording on a fresh login
        wait_for(lambda: not amis["acme"].events, timeout=10)
        wait_for(lambda: acme.live.pending() == 0, timeout=10)
        gevent.sleep(0.3)
        for index in range(1, len(fake.scenario.sessions)):
            fake.run_session(index, running.address)
        call_id = start.variables["CRM_CALL_ID"]
        row = wait_for(lambda: rows(engines["acme"], "SELECT transfer_extension, status FROM crmagi_calls "
                                                     "WHERE call_id=:c AND status='Held'", c=call_id), timeout=10)
        assert row == [{"transfer_extension": "104", "status": "Held"}]
        assert rows(engines["globex"], "SELECT call_id FROM crmagi_calls") == []
        assert running.apps["globex"].live.stats["events"] == 0
    finally:
        running.stop(timeout=1)
        for ami in amis.values():
            ami.stop()
