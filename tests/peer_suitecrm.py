"""The real SuiteCRM 7.14.6 of ../shared/peers, started for a test with crmagi's package in it.

``SuiteCrmPeer`` runs ``start.sh`` in a short temp dir on a free port with its own database
(demo data: 7 users, 200 contacts ...), so the tests see SuiteCRM's real pages and markup.
``install_crmagi`` installs the SuiteCRM side exactly as `crmagi suitecrm install` does
(webpush/installer.py) and runs Quick Repair and Rebuild as admin, which compiles the
hook registration (docs/suitecrm.md section 9): from then on every page a logged-in
user opens carries popup.js.  ``login`` logs a selenium driver in through the real
login form.  A missing peer fails the test: it never skips.
"""
import http.cookiejar
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pymysql

from conftest import MARIADB_HOST, MARIADB_PORT, SHARED
from peer_asterisk import free_port

PEERS = SHARED / "peers" / "suitecrm"
# Demo logins of the peer (peers/README.md): user name = password.
USERS = {"admin": "1", "sally": "seed_sally_id", "max": "seed_max_id", "chris": "seed_chris_id",
         "will": "seed_will_id", "sarah": "seed_sarah_id", "jim": "seed_jim_id"}


class SuiteCrmPeer:
    def __init__(self, port=None, db=None):
        assert (PEERS / "start.sh").exists(), "SuiteCRM peer missing: %s" % PEERS
        self.dir = Path(tempfile.mkdtemp(prefix="scrm", dir="/tmp"))
        self.port = port or free_port()
        self.db = db or "crmagi_scrm_" + uuid.uuid4().hex[:10]
        done = subprocess.run(["bash", str(PEERS / "start.sh"), str(self.dir), "--port", str(self.port),
                               "--db", self.db], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise AssertionError("SuiteCRM peer did not start: %s%s" % (done.stdout, done.stderr))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def db_url(self):
        """SQLAlchemy URL of the peer's database, as crmagi's [crm] url would name it."""
        return "mysql+pymysql://root@%s:%d/%s" % (MARIADB_HOST, MARIADB_PORT, self.db)

    def sql(self, statement, *args):
        """Run one statement on the peer's database; the rows of a SELECT."""
        connection = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", database=self.db,
                                     autocommit=True, charset="utf8mb4")
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, args or None)
                return cursor.fetchall()
        finally:
            connection.close()

    def set_extension(self, user_name, extension, column="phone_work"):
        """Give a demo user a phone extension (the demo data has none)."""
        self.sql("UPDATE users SET %s = %%s WHERE user_name = %%s" % column, extension, user_name)

    def http(self, user_name="admin"):
        """A urllib opener logged in as a demo user (cookie jar)."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"module": "Users", "action": "Authenticate", "user_name": user_name,
                                       "username_password": user_name}).encode()
        opener.open(self.url + "/index.php", form, timeout=120).read()
        if not any(cookie.name == "PHPSESSID" for cookie in jar):
            raise AssertionError("login as %s gave no session" % user_name)
        return opener

    def install_crmagi(self, secret, ws_url, token_seconds=600, version="0.1.0-peer"):
        """crmagi's package into this SuiteCRM, compiled by Quick Repair and Rebuild."""
        from webpush import installer

        installer.install(str(self.dir), secret=secret, ws_url=ws_url, token_seconds=token_seconds,
                          version=version)
        self.quick_repair()

    def quick_repair(self):
        admin = self.http("admin")
        referer = self.url + "/index.php?module=Administration&action=index"
        request = urllib.request.Request(self.url + "/index.php?module=Administration&action=repair",
                                         headers={"Referer": referer})
        admin.open(request, timeout=600).read()
        compiled = self.dir / "custom/application/Ext/LogicHooks/logichooks.ext.php"
        if not compiled.exists() or "crmagi" not in compiled.read_text(errors="replace").lower():
            raise AssertionError("Quick Repair did not compile crmagi's hook into %s" % compiled)

    def page(self, opener, query):
        """The HTML of index.php?<query> for a logged-in opener."""
        return opener.open(self.url + "/index.php?" + query, timeout=120).read().decode("utf-8", "replace")

    def login(self, driver, user_name, timeout=60):
        """Log a selenium driver in through SuiteCRM's login form (password = user name).

        The window is left on about:blank: the page SuiteCRM lands on after login carries
        popup.js, and its socket would be one more tab of the user that popups may go to."""
        from selenium.webdriver.common.by import By

        driver.get(self.url + "/index.php?module=Users&action=Logout")     # whoever was logged in
        driver.get(self.url + "/index.php?module=Users&action=Login")
        driver.find_element(By.ID, "user_name").send_keys(user_name)
        driver.find_element(By.ID, "username_password").send_keys(user_name)
        driver.find_element(By.ID, "bigbutton").click()
        deadline = time.monotonic() + timeout
        while "action=Login" in driver.current_url or "Authenticate" in driver.current_url:
            if time.monotonic() > deadline:
                raise AssertionError("login as %s did not finish: %s" % (user_name, driver.current_url))
            time.sleep(0.2)
        driver.get("about:blank")

    def stop(self):
        subprocess.run(["bash", str(PEERS / "stop.sh"), str(self.dir), "--drop-db"], capture_output=True,
                       timeout=120)


def suitecrm_and_asterisk(extensions):
    """A generator for a module fixture: (SuiteCrmPeer, AsteriskPeer), the demo users given
    ``extensions`` ({user name: extension}); both stopped after the module."""
    from peer_asterisk import AsteriskPeer

    asterisk = AsteriskPeer(agi_port=free_port())
    crm = None
    try:
        crm = SuiteCrmPeer()
        for user, extension in extensions.items():
            crm.set_extension(user, extension)
        yield crm, asterisk
    finally:
        if crm is not None:
            crm.stop()
        asterisk.stop()


def crmagi_on_both(crm, asterisk, tmp_path, originate_timeout="6"):
    """crmagi_on_peer with its FastAGI on the Asterisk peer's AGI port, AMI logged in, and
    click-to-call ringing the peer's phones; stop() it after use."""
    from browser import wait_for

    application = crmagi_on_peer(crm, tmp_path, asterisk.ami_port,
                                 agi={"listen": "127.0.0.1:%d" % asterisk.agi_port, "timeout": "2"},
                                 ami={"originate_channel": "Local/{exten}@phones",
                                      "originate_timeout": originate_timeout})
    wait_for(lambda: application.ami.connected.is_set(), timeout=30, what="AMI login")
    return application


def crmagi_on_peer(peer, tmp_path, ami_port=None, **sections):
    """`crmagi serve`'s App on the peer's database with popups on (port 0), its package
    installed into the peer with the websocket URL of the port it got.  ``sections`` adds
    or replaces config keys, e.g. ``ami={"originate_channel": "Local/{exten}@phones"}``."""
    from agi.app import App
    from browser import SECRET, ws_url
    from test_end_to_end import app_config

    sections = {name: dict(values) for name, values in sections.items()}
    sections.setdefault("webpush", {}).update({"secret": SECRET, "listen": "127.0.0.1:0",
                                               "allowed_origins": peer.url})
    sections.setdefault("lookup", {}).setdefault("default_region", "US")    # the demo numbers are NANP
    app = App(app_config(peer.db_url, tmp_path, ami_port, **sections)).start()
    app._warm_up()                  # what start() spawned: users and lookup tables loaded before a call
    peer.install_crmagi(SECRET, ws_url(app))
    return app
