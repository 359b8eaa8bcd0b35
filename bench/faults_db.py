"""The fault campaign's own MariaDB: Debian's mariadbd on a temp datadir and a free loopback
port, so the campaign may kill -9 it, stop it, start it again and lock its tables without
touching the shared server the tests use.

    db = PrivateMariaDB(Path(tmp) / "db").install().start()
    db.load_suitecrm("suitecrm")          # real SuiteCRM 7.14.6 schema + sample rows
    seed = seed_records(db, "suitecrm", per_module=50)
    db.kill9(); db.start()                # crash recovery
    with db.locked("suitecrm", "calls", seconds=10): ...
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from common import free_port

MARIADBD = os.environ.get("CRMAGI_MARIADBD", "/usr/sbin/mariadbd")
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
DID = "4930123400"
# Users of the SuiteCRM sample data, given extensions the way tests/test_end_to_end.py does.
USERS = {"seed_sally_id": "101", "seed_max_id": "102", "seed_will_id": "103", "seed_chris_id": "104"}
# Number plans of the seeded records (region DE).  The last 7 digits of each plan start with a
# different digit, so no number of one plan can match another plan's by crmagi's suffix rule.
# module: (table, phone column, how the number is stored, first of its last 7 digits)
PLANS = {"Contacts": ("contacts", "phone_work", "+49 30 1%06d", "1"),
         "Accounts": ("accounts", "phone_office", "030 2%06d", "2"),
         "Leads": ("leads", "phone_mobile", "0049 (30) 3%06d", "3")}
UNKNOWN_DIGIT = "9"                        # never seeded


def caller_id(digit, n):
    """The number as a trunk delivers it (E.164)."""
    return "+4930%s%06d" % (digit, n)


def dialled(digit, n):
    """The number as a phone dials it (national, trunk prefix 0)."""
    return "030%s%06d" % (digit, n)


class PrivateMariaDB:
    """One mariadbd process on ``folder``/data, listening on 127.0.0.1:``port`` only."""

    def __init__(self, folder, port=None):
        self.folder = Path(folder)
        self.data, self.sock = self.folder / "data", self.folder / "mysqld.sock"
        # Its own tmpdir: every start of mariadbd (the install's bootstrap too) deletes each
        # '#sql*' file in its tmpdir, and with the default /tmp those are the live internal
        # temporary tables of the shared server ("#sql-temptable-..." errors in other tests).
        self.tmpdir = self.folder / "tmp"
        self.port = port or free_port()
        self.proc = None
        self.log = self.folder / "mariadbd.log"

    def url(self, database):
        return "mysql+pymysql://root@127.0.0.1:%d/%s" % (self.port, database)

    def _user(self):
        return ["--user=root"] if os.geteuid() == 0 else []

    def install(self):
        if not os.path.exists(MARIADBD):
            raise RuntimeError("%s not found: the fault campaign needs Debian's mariadb-server" % MARIADBD)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=%s" % self.data, "--tmpdir=%s" % self.tmpdir,
                        "--skip-test-db", "--auth-root-authentication-method=normal", *self._user()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.start()
        # root@localhost exists; TCP from 127.0.0.1 may not resolve to localhost.
        self.client("-e", "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';"
                    "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION", via_socket=True)
        return self

    def start(self, timeout=60.0):
        if self.running():
            return self
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--datadir=%s" % self.data, "--tmpdir=%s" % self.tmpdir,
             "--port=%d" % self.port, "--bind-address=127.0.0.1", "--socket=%s" % self.sock,
             "--pid-file=%s" % (self.folder / "pid"),
             "--log-error=%s" % self.log, "--innodb-buffer-pool-size=256M", "--max-connections=500",
             "--character-set-server=utf8mb3", "--collation-server=utf8mb3_general_ci",
             *self._user()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited (%s); see %s" % (self.proc.returncode, self.log))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mariadbd did not listen on %d within %.0fs; see %s" % (self.port, timeout, self.log))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """A crash: SIGKILL, no shutdown; the next start runs InnoDB crash recovery."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout=60.0):
        """A clean shutdown (what `systemctl stop mariadb` does)."""
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()

    def pause(self, paused):
        """SIGSTOP / SIGCONT: a hung server (connections open, nothing answers)."""
        if self.running():
            self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def client(self, *args, database=None, stdin=None, via_socket=False):
        where = ["--socket=%s" % self.sock] if via_socket else ["-h", "127.0.0.1", "-P", str(self.port)]
        cmd = ["mariadb", "--no-defaults", *where, "-uroot", *([database] if database else []), *args]
        with open(stdin, "rb") if stdin else open(os.devnull, "rb") as handle:
            return subprocess.run(cmd, stdin=handle, check=True, capture_output=True, text=True).stdout

    def connect(self, database, **kwargs):
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", database=database,
                               autocommit=True, **kwargs)

    def load_suitecrm(self, database, fixtures):
        self.client("-e", "CREATE DATABASE %s CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci" % database)
        for part in ("schema.sql", "sample-data.sql"):
            self.client(database=database, stdin=Path(fixtures) / part)


def hold_lock(db, database, table, seconds, stop_event=None):
    """``LOCK TABLES <table> WRITE`` from another connection for ``seconds``; then UNLOCK."""
    conn = db.connect(database, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLES %s WRITE" % table)
            if stop_event is not None:
                stop_event.wait(seconds)
            else:
                time.sleep(seconds)
            cur.execute("UNLOCK TABLES")
    finally:
        conn.close()


def seed_records(db, database, per_module):
    """``per_module`` records in each of Contacts, Accounts and Leads with one phone number
    each and an owner with an extension; the sample rows' own numbers are cleared so only
    the seeded ones can match.  Returns {module: [(record id, inbound caller ID, dialled)]}."""
    owners = sorted(USERS)
    statements = ["UPDATE users SET phone_work='%s' WHERE id='%s'" % (ext, uid) for uid, ext in USERS.items()]
    statements += ["UPDATE contacts SET phone_home=NULL, phone_mobile=NULL, phone_work=NULL, phone_other=NULL,"
                   " phone_fax=NULL",
                   "UPDATE accounts SET phone_office=NULL, phone_alternate=NULL, phone_fax=NULL",
                   "UPDATE leads SET phone_home=NULL, phone_mobile=NULL, phone_work=NULL, phone_other=NULL,"
                   " phone_fax=NULL"]
    seeded = {}
    for module, (table, column, stored, digit) in PLANS.items():
        rows, seeded[module] = [], []
        for n in range(per_module):
            rid = "fault-%s-%06d" % (table, n)
            owner = owners[n % len(owners)]
            name = ("name", "'Account %d'" % n) if table == "accounts" else \
                ("first_name, last_name", "'First%d', 'Last%d'" % (n, n))
            rows.append("INSERT INTO %s (id, %s, %s, assigned_user_id, deleted, date_modified) VALUES "
                        "('%s', %s, '%s', '%s', 0, '2026-11-01 10:00:00')" % (
                            table, name[0], column, rid, name[1], stored % n, owner))
            seeded[module].append((rid, caller_id(digit, n), dialled(digit, n)))
        statements += rows
    conn = db.connect(database)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()
    return seeded
