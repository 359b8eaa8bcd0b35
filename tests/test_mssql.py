"""Microsoft SQL Server (issue #11 section 4), without a SQL Server: no server runs on these
machines, so every statement crmagi sends to one is built here with the real code paths,
given its parameters by pymssql's own client-side substitution (the text the server would
receive), then checked: parsed as T-SQL by sqlglot, and searched for MySQL-only syntax.
The SuiteCRM tables are reflected from the real MariaDB schema (the shape SugarCRM has on
SQL Server too); SQL Server's own DDL is rendered with SQLAlchemy's mssql dialect through a
mock engine.  The pymssql driver itself runs: the gevent wait callback on real sockets, and
a connection to a port where no server listens.
"""
import contextlib
import dataclasses
import json
import re
import socket
from datetime import datetime, timezone

import gevent
import pymssql
import pytest
import sqlglot
from hypothesis import given, settings, strategies as st
from pymssql import _mssql
from sqlalchemy import MetaData, create_engine, create_mock_engine

from agi.config import load
from agi.errors import ConfigError
from crmsync import apikeys, calls, dialect as dialects, records, sqlbatch, triggers, userprefs
from crmsync.calls import CRMAGI_CALLS, CallStore
from crmsync.db import CrmUnavailable, Schema, make_engine
from crmsync.dialect import mssql as mssql_part
from crmsync.dialect import mssql_index
from crmsync.livecalls import LiveCalls
from crmsync.missed import MISSED, MissedCalls
from crmsync.models import CallRecord, LiveUpdate, ModuleSpec
from crmsync.phoneindex import STATE_TABLE, PhoneIndex
from crmsync.records import index_union, module_query
from crmsync.triggers import INDEX_TABLE, digits_rev
from test_directory import ACCOUNTS, CONTACTS, LEADS
from test_phoneindex import TOKENS, TRICKY, rules

URL = "mssql+pymssql://crm:s3cret@127.0.0.1:1/sugarcrm"     # nothing listens on port 1
# MySQL (and SQLite) syntax that T-SQL does not have.
FORBIDDEN = (("`", "backtick"), (" LIMIT ", "LIMIT"), ("REGEXP", "REGEXP"), ("ON DUPLICATE", "ON DUPLICATE KEY"),
             ("FOR UPDATE", "FOR UPDATE"), ("<=>", "<=>"), ("INSERT IGNORE", "INSERT IGNORE"),
             ("ENGINE=", "ENGINE="), ("CHARACTER SET", "CHARACTER SET"), ("IF NOT EXISTS", "IF NOT EXISTS"),
             ("DATABASE()", "DATABASE()"), ("AUTO_INCREMENT", "AUTO_INCREMENT"), ("ADD COLUMN", "ADD COLUMN"))


def tsql(sql, params=()):
    """The text pymssql would send for (sql, params): its own parameter substitution."""
    return _mssql.substitute_params(sql, tuple(params)).decode("utf-8") if params else sql


def check_tsql(text):
    """Fails unless ``text`` is T-SQL without MySQL-only syntax; returns sqlglot's statements."""
    upper = text.upper()
    for needle, name in FORBIDDEN:
        assert needle not in upper, "%s in T-SQL: %s" % (name, text)
    parsed = sqlglot.parse(text, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    kinds = [type(statement).__name__ for statement in parsed if statement is not None]
    assert kinds and "Command" not in kinds, "sqlglot did not understand it as T-SQL: %s" % text
    return parsed


@pytest.fixture(scope="module")
def suitecrm(crm_url_module):
    """The SuiteCRM tables crmagi reads and writes, reflected from the real schema."""
    engine = create_engine(crm_url_module)
    metadata = MetaData()
    metadata.reflect(engine, only=["calls", "calls_users", "calls_contacts", "calls_leads", "users", "contacts",
                                   "accounts", "accounts_contacts", "leads", "alerts"])
    engine.dispose()
    return dict(metadata.tables)


@pytest.fixture
def mssql_engine():
    engine = make_engine(URL, connect_timeout=1.0, query_timeout=2.0)
    yield engine
    engine.dispose()


def _reflected(tables):
    """A Schema that already holds the tables (no SQL Server to reflect them from)."""
    def make(engine, wanted, required=None):
        schema = Schema(engine, wanted, required)
        schema._tables = {name: tables[name] for name in wanted if name in tables}
        return schema
    return make


class Captured:
    """sqlbatch.transaction stand-in: records every (sql, params) of every transaction."""

    def __init__(self, lock_finds_call=True):
        self.statements, self.lock_finds_call = [], lock_finds_call
        self.owners = {}            # call id -> assigned_user_id of its inserted calls row

    def read(self, sql, params, names=False):
        rows = self._rows(sql, params)
        if sql.startswith("SELECT JSON_ARRAY("):        # MariaDB: each row as one JSON column
            return [(json.dumps(list(row), default=str),) for row in rows]
        return rows

    def _rows(self, sql, params):
        self.statements.append((sql, tuple(params)))
        if "LEFT JOIN" in sql and "ended_at" in sql:     # a finish's read of its call
            return [(None, None, None, self.owners[params[0]])] if params[0] in self.owners else []
        if "[crmagi_missed]" in sql or "`crmagi_missed`" in sql:      # one open entry of the number
            return [("m-1", "u-1", 1, "a-1", datetime(2026, 12, 6))] if "[user_id]" in sql or "`user_id`" in sql \
                else [("m-1", "a-1")]
        return []

    def read_sets(self, queries):
        return [self.read(sql, params) for sql, params in queries]

    def commit(self, statements):
        self.statements.extend((sql, tuple(params)) for sql, params in statements)
        for sql, params in statements:
            if sql.startswith(("INSERT INTO [calls] ", "INSERT INTO `calls` ")):
                columns = [name.strip("[]` ") for name in sql[sql.index("(") + 1:sql.index(")")].split(",")]
                self.owners[params[0]] = params[columns.index("assigned_user_id")]
        return [(1,)] if self.lock_finds_call else []

    @contextlib.contextmanager
    def transaction(self, _engine):
        yield self


def _record(**changes):
    values = dict(call_id="6f1c1f4e-5a54-5d6b-9c2e-8a1f0c0b7e11", linkedid="1700000000.1", uniqueid="1700000000.1",
                  direction="inbound", number="+7 (495) 123-45-67", started_at=datetime.now(timezone.utc),
                  did="74951234567", extension="101", parent_module="Contacts", parent_id="c-1",
                  parent_name="Ivan 'Vanya' Petrov", link_table="calls_contacts", link_column="contact_id",
                  assigned_user_id="u-1", lookup_status="found", answered_user_id="u-2", answered_extension="102",
                  dial_status="ANSWER", talk_seconds=61, ring_seconds=5, recording="2026/12/06/x.wav",
                  hangup_cause="16", ended_at=datetime.now(timezone.utc))
    values.update(changes)
    fields = {f.name for f in dataclasses.fields(CallRecord)}
    return CallRecord(**{k: v for k, v in values.items() if k in fields})


def _live_updates(call_id):
    fields = {f.name for f in dataclasses.fields(LiveUpdate)}
    common = dict(call_id=call_id, extension="103", user_id="u-3", path="/var/spool/asterisk/monitor/x.wav",
                  did="74951234567", campaign="camp-1", lead_source="Web Site", group="Sales")
    return [LiveUpdate(kind=kind, **{k: v for k, v in common.items() if k in fields})
            for kind in ("answered", "transferred", "recording", "attribution")]


def hot_path_statements(engine, tables, monkeypatch):
    """Every statement of a call's rows on ``engine``: start, finish (found and missing), live updates."""
    monkeypatch.setattr(calls, "Schema", _reflected(tables))
    captured = Captured()
    monkeypatch.setattr(sqlbatch, "transaction", captured.transaction)
    missed = MissedCalls(engine, region="RU")
    missed._alerts._tables, missed._bell = {"alerts": tables["alerts"]}, True
    store = CallStore(engine, missed=missed)
    store._ready = True       # crmagi_calls is created by ensure_tables, checked on its own below
    rec = _record()
    assert store.start(rec) is True
    assert store.finish(rec) is True          # the read finds the call: ends it
    # A missed call (its entry and alert again), and one for another user (a new entry and alert);
    # neither has a row: each finish reads, inserts the call, reads again, then ends it.
    for owner in ("u-1", "u-9"):
        assert store.finish(_record(call_id=owner + "-missed", dial_status="NOANSWER", talk_seconds=0,
                                    answered_user_id=None, answered_extension=None, assigned_user_id=owner))
    live = LiveCalls(store)
    for change in _live_updates(rec.call_id):
        assert live.apply(change) is True
    return captured.statements


# -- configuration -------------------------------------------------------------------------------

def write(tmp_path, text):
    path = tmp_path / "crmagi.ini"
    path.write_text(text)
    return str(path)


def test_an_mssql_url_validates(tmp_path):
    assert load(write(tmp_path, "[crm]\nurl = %s\n" % URL), environ={}).crm.url == URL


def test_an_mssql_url_without_the_extra_names_the_key_and_the_extra(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pymssql" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "[crm]\nurl = %s\n" % URL), environ={})
    assert str(caught.value).startswith("config [crm] url: ")
    assert "pip install 'crmagi[mssql]'" in str(caught.value) and "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url, says", [
    ("mssql+pyodbc://crm:s3cret@db/sugarcrm", "mssql+pymssql://"),
    ("mssql://crm:s3cret@db/sugarcrm", "mssql+pymssql://"),
    ("postgresql://crm:s3cret@db/crm", "postgresql databases are not supported"),
    ("mysql://crm:s3cret@db/crm", "mysql+pymysql://"),
    ("mysql+mysqldb://crm:s3cret@db/crm", "mysql+pymysql://"),
])
def test_other_database_urls_are_refused_by_key(tmp_path, url, says):
    with pytest.raises(ConfigError, match=r"^config \[crm\] url: ") as caught:
        load(write(tmp_path, "[crm]\nurl = %s\n" % url), environ={})
    assert says in str(caught.value) and "s3cret" not in str(caught.value)


# -- the engine and the driver ---------------------------------------------------------------------

def test_the_engine_is_pymssql_with_bounded_timeouts(mssql_engine):
    assert (mssql_engine.dialect.name, mssql_engine.dialect.driver) == ("mssql", "pymssql")
    assert dialects.of(mssql_engine) is dialects.MSSQL
    args = dialects.MSSQL.connect_args(mssql_engine.url, 1.0, 2.0)
    assert args == {"login_timeout": 1, "timeout": 2, "charset": "UTF-8"}


def test_an_unreachable_sql_server_is_crm_unavailable_not_a_crash(mssql_engine):
    """The real pymssql/FreeTDS connect, to a port where nothing listens."""
    with pytest.raises(CrmUnavailable, match="CRM database"):
        CallStore(mssql_engine).ping()


def test_the_wait_callback_lets_other_greenlets_run_and_gives_up_as_a_disconnect(mssql_engine, monkeypatch):
    """pymssql calls it with the socket before it blocks for a reply (crmsync/dialect/mssql.py)."""
    assert pymssql._mssql.wait_callback is mssql_part._WAIT      # installed by make_engine
    monkeypatch.setattr(mssql_part._WAIT, "seconds", 0.3)      # the longest query_timeout of all engines
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.02)) for _ in range(100)])
    ours, server = socket.socketpair()
    try:
        waiter = gevent.spawn(mssql_part._WAIT, ours.fileno())
        gevent.sleep(0.1)
        assert not waiter.ready() and len(ticks) >= 2      # waiting, and the loop runs meanwhile
        server.send(b"reply")
        waiter.join(1)
        assert waiter.successful()                          # the reply ends the wait
        silent = gevent.spawn(mssql_part._WAIT, ours.fileno())   # the reply was never read: still readable
        silent.join(1)
        ours.recv(16)
        started = gevent.get_hub().loop.now()
        silent = gevent.spawn(mssql_part._WAIT, ours.fileno())
        silent.join(2)
        assert isinstance(silent.exception, pymssql.OperationalError)
        assert gevent.get_hub().loop.now() - started >= 0.25
        # SQLAlchemy's pymssql dialect takes it for a lost connection: the pool discards it.
        assert mssql_engine.dialect.is_disconnect(silent.exception, None, None)
    finally:
        ticker.kill()
        ours.close()
        server.close()


def test_error_numbers_are_read_per_database():
    duplicate = pymssql.IntegrityError(2627, b"Violation of PRIMARY KEY constraint")
    victim = pymssql.OperationalError(1205, b"Transaction was deadlocked")
    assert dialects.MSSQL.is_duplicate(duplicate) and dialects.MSSQL.is_deadlock(victim)
    assert dialects.MSSQL.is_duplicate(pymssql.IntegrityError(2601, b"Cannot insert duplicate key row"))
    assert not dialects.MYSQL.is_deadlock(victim)      # 1205 is a lock wait timeout on MySQL
    assert dialects.MYSQL.is_duplicate(pymssql.IntegrityError(1062, b"Duplicate entry"))


# -- the call rows -----------------------------------------------------------------------------------

def test_every_call_row_statement_is_tsql(suitecrm, mssql_engine, monkeypatch):
    statements = hot_path_statements(mssql_engine, suitecrm, monkeypatch)
    assert len(statements) >= 15
    for sql, params in statements:
        assert sql.count("%s") == len(params), sql
        check_tsql(tsql(sql, params))
    texts = [sql for sql, _ in statements]
    locks = [sql for sql in texts if "WITH (UPDLOCK, ROWLOCK)" in sql]
    # Each finish's read carries the open entries of its number (one batch): the connected call's
    # once, each missed call's twice (it reads, inserts its missing row, reads again); then each
    # live update's lock.
    assert len(locks) == 2 + 2 * 2 * 2 + 4
    assert any(sql.startswith("INSERT INTO [alerts]") for sql in texts)
    assert any(sql.startswith("UPDATE [crmagi_missed] SET [open] = NULL") for sql in texts)
    assert any(sql.startswith("UPDATE [crmagi_missed] SET [attempts]") for sql in texts)
    assert any("INTERSECT SELECT %s" in sql for sql in texts)          # the NULL-safe comparison
    assert any("[transfers] = COALESCE([transfers], 0) + 1" in sql for sql in texts)


def test_the_mysql_statements_are_unchanged(suitecrm, monkeypatch):
    """The same code on MariaDB keeps its own syntax (the other tests run it for real)."""
    maria = create_engine("mysql+pymysql://u:p@127.0.0.1/x")
    texts = [sql for sql, _ in hot_path_statements(maria, suitecrm, monkeypatch)]
    assert any(sql.endswith(" FOR UPDATE") for sql in texts) and any("<=>" in sql for sql in texts)
    assert not any("[" in sql for sql in texts)


class FakeCursor:
    """A DBAPI cursor that records what it is given and answers one result set."""

    def __init__(self, rows):
        self.executed, self.rows, self.description = [], rows, None

    def execute(self, sql, params=()):
        self.executed.append((sql, params))
        self.description = (("x",),) if self.rows else None

    def fetchall(self):
        return list(self.rows)

    def nextset(self):
        return None


def test_a_transaction_is_one_tsql_batch_that_commits_as_pymssql_does(suitecrm, mssql_engine, monkeypatch):
    statements = hot_path_statements(mssql_engine, suitecrm, monkeypatch)[-4:]
    cursor = FakeCursor([(1,)])
    assert dialects.MSSQL.run_batch(None, cursor, statements) == [(1,)]
    (sql, params), = cursor.executed
    assert sql.endswith(";\nCOMMIT TRAN;\nBEGIN TRAN")
    parsed = check_tsql(tsql(sql, params))
    assert len(parsed) == len(statements) + 2
    assert dialects.MSSQL.run_batch(None, FakeCursor([]), statements) == []     # no result set: no rows


def test_each_connection_aborts_the_batch_on_the_first_error():
    """Without XACT_ABORT, SQL Server would run the statements after a failed one and commit them."""
    class Conn:
        def __init__(self):
            self.cursor_ = FakeCursor([])

        def cursor(self):
            return self.cursor_
    conn = Conn()
    conn.cursor_.close = lambda: None
    dialects.MSSQL.on_connect(conn)
    assert conn.cursor_.executed == [("SET XACT_ABORT ON", ())]


# -- crmagi's own tables -------------------------------------------------------------------------------

def ddl_of(metadata, tables=None):
    statements = []
    engine = create_mock_engine("mssql+pymssql://", lambda sql, *a, **k: statements.append(
        str(sql.compile(dialect=engine.dialect))))
    metadata.create_all(engine, tables=tables, checkfirst=False)
    return statements


@pytest.mark.parametrize("table", [CRMAGI_CALLS, apikeys.API_KEYS, userprefs.CRMAGI_USERS, MISSED],
                         ids=lambda table: table.name)
def test_crmagi_tables_create_on_sql_server(table):
    statements = ddl_of(table.metadata, [table])
    assert statements[0].startswith("\nCREATE TABLE %s (" % table.name)
    for statement in statements:
        check_tsql(statement)
    assert "PRIMARY KEY" in statements[0]
    if table is userprefs.CRMAGI_USERS:
        assert "popups BIT NOT NULL" in statements[0]
    if table is MISSED:     # one open entry per number and user; closed ones (NULL) unlimited
        assert any(s.endswith("WHERE [open] IS NOT NULL") for s in statements)


def test_a_column_added_to_an_older_crmagi_calls_uses_tsql():
    sql = dialects.MSSQL.add_column_sql("crmagi_calls", "did_group",
                                        CRMAGI_CALLS.c.did_group.type.compile(dialect=create_mock_engine(
                                            "mssql+pymssql://", None).dialect))
    assert sql == "ALTER TABLE [crmagi_calls] ADD [did_group] VARCHAR(100)"
    check_tsql(sql)


# -- lookups ---------------------------------------------------------------------------------------

def _queries(tables):
    return [module_query(spec, tables) for spec in (CONTACTS, ACCOUNTS, LEADS)]


def test_lookup_queries_compile_to_tsql(suitecrm, mssql_engine):
    for query in _queries(suitecrm):
        scan = query.scan.compile(dialect=mssql_engine.dialect)
        sql, params = dialects.MSSQL.driver_statement(scan)
        assert "TOP %d" % records.MAX_SCAN_ROWS in sql
        check_tsql(_mssql.substitute_params(sql, dict(params, p="%1234567%")).decode())
        by_id = query.by_id.compile(dialect=mssql_engine.dialect, compile_kwargs={"render_postcompile": False})
        state = by_id.construct_expanded_state({"ids": ["a", "b"]})
        check_tsql(_mssql.substitute_params(state.statement, state.parameters).decode())


def test_the_index_union_is_one_tsql_statement(suitecrm, mssql_engine):
    union = index_union(_queries(suitecrm))
    sql, params = dialects.MSSQL.driver_statement(union.statement.compile(dialect=mssql_engine.dialect))
    assert sql.count("TOP 1000") == 3 and "POSTCOMPILE" not in sql
    parsed = check_tsql(_mssql.substitute_params(sql, dict(params, p="7654321%")).decode())
    assert len(parsed) == 1


# -- the phone index --------------------------------------------------------------------------------

def test_index_tables_create_on_sql_server():
    metadata, index, state = mssql_index.tables(STATE_TABLE)
    statements = ddl_of(metadata)
    for statement in statements:
        check_tsql(statement)
    create = statements[0] if INDEX_TABLE in statements[0] else statements[1]
    assert "digits_rev VARCHAR(32) COLLATE Latin1_General_BIN2 NOT NULL" in create
    assert "PRIMARY KEY (module, record_id, field)" in create
    assert any(s.startswith("CREATE INDEX") and "(digits_rev)" in s for s in statements)


def test_index_statements_are_tsql():
    index = PhoneIndex(create_engine(URL), rules())
    assert index.supported
    check_tsql(tsql(index.sql.candidates_sql(1000).replace(":p", "%s"), ("7654321%",)))
    for spec in (CONTACTS, ACCOUNTS, LEADS):
        for sql in index.sql.rebuild_sql(spec):
            check_tsql(sql)
    check_tsql("SELECT t.name, OBJECT_NAME(t.parent_id), OBJECT_DEFINITION(t.object_id) FROM sys.triggers t"
               " WHERE t.parent_class = 1 AND t.name LIKE 'crmagi[_]%'")


def _statements_of(body):
    """The statements inside BEGIN ... END of a trigger."""
    head, _, rest = body.partition("\nBEGIN\n")
    assert rest.endswith("\nEND")
    return head, [line.strip() for line in rest[:-len("\nEND")].splitlines() if line.strip()]


def test_each_table_gets_one_statement_level_trigger_of_tsql():
    wanted = mssql_index.bodies([CONTACTS, ACCOUNTS, LEADS, ModuleSpec("Prospects", "prospects",
                                                                      ("phone_work", "phone_mobile"))])
    assert sorted(wanted) == ["crmagi_accounts_aiud", "crmagi_contacts_aiud", "crmagi_leads_aiud",
                              "crmagi_prospects_aiud"]
    for name, trigger in wanted.items():
        head, statements = _statements_of(trigger.body)
        assert head == "CREATE TRIGGER [%s] ON [%s] AFTER INSERT, UPDATE, DELETE AS" % (name, trigger.table)
        assert statements[0] == "SET NOCOUNT ON;"
        assert trigger.body.isascii()      # OBJECT_DEFINITION gives back exactly this text
        for statement in statements[1:]:
            check_tsql(statement)
        spec = next((spec for spec in (CONTACTS, ACCOUNTS, LEADS) if spec.table == trigger.table), None)
        if spec:      # SET NOCOUNT, the module's deleted records, then per field: changed, new
            assert len(statements) == 2 + 2 * len(spec.phone_fields)
            assert all("[dbo].[crmagi_digits_rev](n.[%s])" % f in trigger.body for f in spec.phone_fields)


# The T-SQL function, step by step in Python: tested against triggers.digits_rev below, and
# tied to the function's text by the markers and whitespace it is built from.
def tsql_key(value):
    if value is None:
        return None
    spaces = mssql_index.SPACES
    low = "".join(mssql_index.FOLDS.get(c, c.lower() if len(c.lower()) == 1 else c) for c in value)
    n = i = len(value)
    while i > 0 and value[i - 1] in spaces:
        i -= 1
    last = i
    while i > 0 and "0" <= value[i - 1] <= "9":
        i -= 1
    m = 0
    if 1 <= last - i <= 7:
        while i > 0 and value[i - 1] in spaces:
            i -= 1
        for marker in mssql_index._MARKERS:
            if i >= len(marker) and low[i - len(marker):i] == marker:
                m = i - len(marker) + 1
                break
        else:
            if i >= 1 and value[i - 1] == "=":
                k = i - 1
                while k > 0 and value[k - 1] in spaces:
                    k -= 1
                if k >= 3 and low[k - 3:k] == "ext":
                    k -= 3
                    while k > 0 and value[k - 1] in spaces:
                        k -= 1
                    if k >= 1 and value[k - 1] == ";":
                        m = k
        if m > 0:
            k = m - 1
            while k > 0 and value[k - 1] in spaces:
                k -= 1
            if k < m - 1 or (k >= 1 and ("0" <= value[k - 1] <= "9" or value[k - 1] == ")")):
                n = m - 1
    return "".join(c for c in reversed(value[:n]) if "0" <= c <= "9")[:triggers.KEY_DIGITS]


def test_the_tsql_key_steps_give_the_python_key_on_the_tricky_values():
    for value in TRICKY:
        assert tsql_key(value) == digits_rev(value), value


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS + ["ſ", "ı", "İ", "K", "ᲀн", "ᲁоб", "дᲂб", "exten", "ſion", "sıon", ";",
                                          " ;ext =", "x#"]), max_size=25).map("".join))
def test_the_tsql_key_steps_give_the_python_key_on_random_text(value):
    assert tsql_key(value) == digits_rev(value)


def test_the_case_folds_are_pythons():
    letters = set("".join(marker for marker in mssql_index._MARKERS if marker.isalpha()))
    folds = {c: letter for letter in letters for c in map(chr, range(0x10000))
             if c not in (letter, letter.upper()) and re.fullmatch("(?i)" + letter, c)}
    assert folds == mssql_index.FOLDS


def test_the_function_is_built_from_those_steps():
    sql = mssql_index.function_sql()
    for char in mssql_index.FOLDS:
        assert "NCHAR(%d)" % ord(char) in sql
    assert sql.isascii()
    assert len(re.findall(r"\bBEGIN\b", sql)) == len(re.findall(r"\bEND\b", sql))
    assert set(mssql_index.SPACES) == {chr(c) for c in range(0x10000) if chr(c).isspace()}
    for marker in mssql_index._MARKERS:
        assert "= (%s) COLLATE Latin1_General_BIN2" % mssql_index.nstring(marker) in sql
    declared = set(re.findall(r"(@\w+) (?:INT|NVARCHAR|VARCHAR)", sql))
    assert set(re.findall(r"@\w+", sql)) == declared
    for line in sql.splitlines():      # the plain statements of the body, one by one
        line = line.strip()
        if line.startswith(("DECLARE", "SET ", "RETURN")):
            check_tsql(line)


@pytest.mark.parametrize("name, attribute, open_value", [("mssql", "autocommit_state", False),
                                                           ("sqlite", "in_transaction", True)])
def test_end_read_rolls_back_only_outside_autocommit(name, attribute, open_value):
    """The index lookup's driver-cursor read is ended by each dialect's own test of autocommit."""
    from crmsync import dialect as dialects

    class Driver:
        rolled_back = 0

        def rollback(self):
            self.rolled_back += 1

    for value, expected in ((open_value, 1), (not open_value, 0)):
        driver = Driver()
        setattr(driver, attribute, value)
        dialects.named(name).end_read(driver)
        assert driver.rolled_back == expected
