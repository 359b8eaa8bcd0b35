"""Tier c: the backfill from a CDR database table ([cdr] url) on MariaDB, with the real SuiteCRM schema.

The peer Asterisk has no database CDR backend (no cdr_adaptive_odbc / cdr_mysql module), so the
table holds the rows the peer wrote to Master.csv (tests/fixtures/cdr/), loaded into the layout
of Asterisk's contrib/ast-db-manage ``cdr`` table, or the older cdr_mysql one (``calldate``).
"""
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from agi.app import App
from agi.cdr import backfill, csvrows
from crmsync.db import SchemaError
from test_end_to_end import CONTACT, CONTACT_102, LEAD, app_config, db, rows, wait_for  # noqa: F401 (fixture)

FIXTURES = Path(__file__).parent / "fixtures" / "cdr"
TEXT = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
        "disposition", "amaflags", "userfield", "uniqueid", "linkedid", "peeraccount")
LAYOUTS = {
    "ast-db-manage": "start DATETIME, answer DATETIME, end DATETIME, sequence INTEGER, ",
    "cdr_mysql": "calldate DATETIME, ",
}
SINCE = datetime(2026, 12, 6, 11, 0, tzinfo=timezone.utc)
UNTIL = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def load_cdr_table(engine, layout):
    data = (FIXTURES / "master-newcdrcolumns.csv").read_bytes()
    records, problems = csvrows.parse(data)
    assert not problems
    columns = LAYOUTS[layout] + ", ".join("%s VARCHAR(150)" % name for name in TEXT)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cdr (id INTEGER AUTO_INCREMENT PRIMARY KEY, %s, duration INTEGER, "
                          "billsec INTEGER)" % columns))
        for row in records:
            values = {name: getattr(row, name, "") for name in TEXT}
            values.update(duration=row.duration, billsec=row.billsec)
            naive = {key: getattr(row, key).replace(tzinfo=None) if getattr(row, key) else None
                     for key in ("start", "answer", "end")}
            if layout == "cdr_mysql":
                values["calldate"] = naive["start"]
            else:
                values.update(naive)
            names = ", ".join("`%s`" % name for name in values)
            conn.execute(text("INSERT INTO cdr (%s) VALUES (%s)" % (names, ", ".join(":" + n for n in values))),
                         values)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_cdr_table_backfills_like_the_csv(db, crm_url, tmp_path, layout):
    load_cdr_table(db, layout)
    app = App(app_config(crm_url, tmp_path, cdr={"url": crm_url, "backfill_on_start": "no"}))
    try:
        app.store.ensure_tables()
        report = backfill.run(app, SINCE, UNTIL, engine_for=lambda url: db)
        # On a busy MariaDB a write may take longer than [crm] query_timeout: it is spooled, then flushed.
        assert (report.calls, report.written + report.spooled, report.seen, report.problems) == (4, 4, 0, [])
        wait_for(lambda: app.writer.flush() >= 0 and app.writer.pending() == 0, timeout=30)
        bernd, = rows(db, "SELECT c.* FROM calls c JOIN calls_contacts l ON l.call_id=c.id "
                          "WHERE l.contact_id=:rid", rid=CONTACT_102)
        assert (bernd["status"], bernd["direction"]) == ("Not Held", "Inbound")
        anna, = rows(db, "SELECT c.* FROM calls c JOIN calls_contacts l ON l.call_id=c.id "
                         "WHERE l.contact_id=:rid", rid=CONTACT)
        assert anna["status"] == "Held" and anna["date_start"] == datetime(2026, 12, 6, 11, 15, 37)
        lead, = rows(db, "SELECT c.* FROM calls c JOIN calls_leads l ON l.call_id=c.id WHERE l.lead_id=:rid",
                     rid=LEAD)
        assert (lead["status"], lead["direction"]) == ("Held", "Outbound")
        again = backfill.run(app, SINCE, UNTIL, engine_for=lambda url: db)
        assert (again.calls, again.written, again.seen) == (4, 0, 4)
        assert len(rows(db, "SELECT 1 FROM crmagi_calls WHERE backfilled = 1")) == 4
        on_start = backfill.on_start(app)        # from 5 min before the last logged call's start
        assert (on_start.calls, on_start.written, on_start.seen) == (4, 0, 4)
        early = backfill.run(app, SINCE, datetime(2026, 12, 6, 11, 15, tzinfo=timezone.utc),
                             engine_for=lambda url: db)
        assert early.calls == 0
    finally:
        app.stop(timeout=1)


def test_the_backfill_on_start_waits_for_a_first_logged_call(db, crm_url, tmp_path):
    load_cdr_table(db, "ast-db-manage")
    app = App(app_config(crm_url, tmp_path, cdr={"url": crm_url}))
    try:
        app.store.ensure_tables()
        assert backfill.on_start(app) is None
        assert rows(db, "SELECT 1 FROM crmagi_calls") == []
    finally:
        app.stop(timeout=1)


def test_a_table_without_the_cdr_columns_is_named(db, crm_url, tmp_path):
    app = App(app_config(crm_url, tmp_path, cdr={"url": crm_url, "table": "contacts"}))
    try:
        with pytest.raises(SchemaError, match="contacts.src: column not found"):
            backfill.run(app, SINCE, UNTIL, engine_for=lambda url: db)
        with pytest.raises(SchemaError, match="no_such_cdr: CDR table not found"):
            app_config_table = app_config(crm_url, tmp_path, cdr={"url": crm_url, "table": "no_such_cdr"})
            backfill.read_rows(app_config_table, SINCE, UNTIL, engine_for=lambda url: db)
    finally:
        app.stop(timeout=1)
