"""The floor: what a bare gevent + PyMySQL FastAGI server costs per call on this box (issue #12).

The same two FastAGI dialogues crmagi holds with Asterisk (``incoming``: one GET FULL VARIABLE,
one SET VARIABLE ARRAY; ``hangup``: one GET FULL VARIABLE of several values, one SET VARIABLE)
and three database round trips per call, autocommit: crmagi's own phone-index lookup statement
(the same SQL text, so MariaDB does the same work), one INSERT and one UPDATE of a row in a
scratch table.  Nothing else: no number parsing or matching (the first candidate row wins), no
write-ahead spool, no SuiteCRM rows (Call, link rows, crmagi_calls), no timeouts, no metrics,
no AMI.  It is not a product, and loses calls when anything fails.

Run it, then drive it with the same generator and readings as crmagi (no AMI feed: give
crmagi ``--no-ami`` to compare like with like)::

    python bench/floor.py --database DB --port 14700 &
    python bench/load.py --address 127.0.0.1:14700 --server-pid $! --samples FILE --rate 200 --duration 30

The difference between the two CPU figures per call is what crmagi's features cost over
the stack itself.
"""
import argparse
import os
import re
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import pymysql  # noqa: E402
from gevent.queue import Queue  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

TABLE = "crmagi_floor_calls"
_VALUE = re.compile(rb"^200 result=1 \((.*)\)\n$", re.S)
_NON_DIGIT = re.compile(r"\D")
_SEP = "~f~"


class Floor:
    def __init__(self, database, lookup_sql, lookup_params, suffix_digits=7, connections=20):
        self.sql, self.params, self.suffix = lookup_sql, lookup_params, suffix_digits
        self.idle = Queue()          # opened at start, as crmagi's warm pool is
        for _ in range(connections):
            self.idle.put(pymysql.connect(host="127.0.0.1", user="root", database=database, autocommit=True))

    def query(self, sql, args):
        conn = self.idle.get()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            self.idle.put(conn)

    def handle(self, sock, _address):
        buf = b""
        while b"\n\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buf += chunk
        env = dict(line.split(": ", 1) for line in buf.split(b"\n\n", 1)[0].decode().split("\n") if ": " in line)
        reader = sock.makefile("rb")
        if env.get("agi_network_script") == "hangup":
            self.hangup(sock, reader)
        else:
            self.incoming(sock, reader, env)
        reader.close()
        sock.close()

    def incoming(self, sock, reader, env):
        linkedid = _command(sock, reader, b"GET FULL VARIABLE ${CHANNEL(linkedid)}\n")
        digits = _NON_DIGIT.sub("", env.get("agi_callerid", ""))
        owner = ""
        if len(digits) >= self.suffix:
            rows = self.query(self.sql, dict(self.params, p=digits[-self.suffix:][::-1] + "%"))
            owner = "101" if rows else ""
        call_id = str(uuid.uuid4())
        self.query("INSERT INTO %s (id, linkedid, number, started) VALUES (%%s, %%s, %%s, UTC_TIMESTAMP())" % TABLE,
                   (call_id, linkedid, digits))
        _command(sock, reader, b'SET VARIABLE ARRAY(CRM_STATUS,CRM_CALL_ID,CRM_OWNER_EXTEN) "%s,%s,%s"\n' % (
            b"found" if owner else b"unknown", call_id.encode(), owner.encode()))

    def hangup(self, sock, reader):
        text = _command(sock, reader, ("GET FULL VARIABLE %s\n" % _SEP.join(
            ("${CRM_CALL_ID}", "${DIALSTATUS}", "${ANSWEREDTIME}"))).encode())
        call_id, status, talk = (text.split(_SEP) + ["", "", ""])[:3]
        self.query("UPDATE %s SET status = %%s, talk = %%s, ended = UTC_TIMESTAMP() WHERE id = %%s" % TABLE,
                   (status, int(talk) if talk.isdigit() else 0, call_id))
        _command(sock, reader, b"SET VARIABLE CRM_HANGUP done\n")


def _command(sock, reader, line):
    sock.sendall(line)
    found = _VALUE.match(reader.readline())
    return found.group(1).decode() if found else ""


def lookup_statement(database):
    """crmagi's phone-index statement for this database, as its Directory compiles it once (as
    text: crmagi prepares it once per connection on MariaDB, crmsync/prepared.py)."""
    from agi.app import lookup_rules
    from agi.config import load
    from common import write_config
    from crmsync.db import make_engine
    from crmsync.directory import Directory

    url = "mysql+pymysql://root@127.0.0.1:3306/" + database
    config = load(str(write_config(url, Path(tempfile.mkdtemp(prefix="crmagi-floor-")) / "crmagi.ini")))
    engine = make_engine(url, read_only=True)
    _union, read = Directory(engine, lookup_rules(config))._index_sql()
    engine.dispose()
    return read.sql, read.params


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", required=True)
    p.add_argument("--port", type=int, default=14700)
    args = p.parse_args(argv)
    sql, params = lookup_statement(args.database)
    floor = Floor(args.database, sql, params)
    floor.query("CREATE TABLE IF NOT EXISTS %s (id CHAR(36) PRIMARY KEY, linkedid VARCHAR(64), number VARCHAR(32), "
                "started DATETIME, ended DATETIME, status VARCHAR(16), talk INT) ENGINE=InnoDB" % TABLE, ())
    server = StreamServer(("127.0.0.1", args.port), floor.handle, backlog=4096)
    server.start()
    print("floor FastAGI server on 127.0.0.1:%d, pid %d" % (args.port, os.getpid()), flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
