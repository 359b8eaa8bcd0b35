"""crmsync.prepared: the index lookup PREPAREd once per pooled connection, on the real MariaDB."""
import logging

import pytest
from sqlalchemy import String, bindparam, create_engine, literal, select

from crmsync import prepared
from crmsync.db import make_engine
from crmsync.directory import Directory
from test_phoneindex import OWN_NUMBERS, SAMPLE_NUMBERS, indexed_engine, rules

NUMBERS = OWN_NUMBERS + SAMPLE_NUMBERS


@pytest.fixture(scope="module")
def indexed(crm_url_module):
    """The CRM URL with test_directory's rows and the index installed and built (region RU)."""
    indexed_engine(crm_url_module).dispose()
    return crm_url_module


@pytest.fixture
def one_connection(indexed):
    """An engine that holds a single connection: its session counters are the lookups'."""
    engine = make_engine(indexed, pool_size=1)
    yield engine
    engine.dispose()


def counters(engine):
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SHOW SESSION STATUS WHERE Variable_name IN "
                                    "('Com_prepare_sql', 'Com_execute_sql')").all()
    return {name: int(value) for name, value in rows}


def as_text(directory):
    """``directory`` made to send its index lookup as text, as before crmsync/prepared.py."""
    union, read = directory._index_sql()
    directory._index_compiled = (union, prepared.TextRead(read.sql, read.params, "p"))
    return directory


def outcomes(directory):
    return [(r.status, r.e164, r.caller, r.explain) for r in map(directory.lookup, NUMBERS)]


def test_a_connection_prepares_the_lookup_once_and_finds_what_the_text_finds(one_connection):
    directory = Directory(one_connection, rules(), users_cache_seconds=3600)
    assert isinstance(directory._index_sql()[1], prepared.PreparedRead)
    before = counters(one_connection)
    found = outcomes(directory)
    after = counters(one_connection)
    index_lookups = sum(1 for *_, explain in found if any(line.startswith("index: ") for line in explain))
    assert index_lookups >= 20
    assert after["Com_prepare_sql"] - before["Com_prepare_sql"] == 1
    assert after["Com_execute_sql"] - before["Com_execute_sql"] == index_lookups
    assert found == outcomes(as_text(Directory(one_connection, rules(), users_cache_seconds=3600)))
    assert any(status == "found" for status, *_ in found)


def test_a_statement_the_server_forgot_is_prepared_again(one_connection, caplog):
    directory = Directory(one_connection, rules(), users_cache_seconds=3600)
    assert directory.lookup("+7 (499) 123-45-67").caller.record_id == "c-ivan"
    name = directory._index_sql()[1].statement
    with one_connection.connect() as conn:
        assert conn.connection.info[name] is True
        conn.exec_driver_sql("DEALLOCATE PREPARE %s" % name)     # as a session reset would
    before = counters(one_connection)
    with caplog.at_level(logging.INFO, logger="crmsync.prepared"):
        assert directory.lookup("+7 (499) 123-45-67").caller.record_id == "c-ivan"
    assert counters(one_connection)["Com_prepare_sql"] - before["Com_prepare_sql"] == 1
    assert "unknown to the server: preparing it again" in caplog.text


def test_a_server_refusing_statements_gets_the_text_statement(indexed, caplog):
    engine = make_engine(indexed, pool_size=1)
    with engine.connect() as conn:
        limit = conn.exec_driver_sql("SELECT @@GLOBAL.max_prepared_stmt_count").scalar()
        conn.exec_driver_sql("SET GLOBAL max_prepared_stmt_count = 0")
    try:
        directory = Directory(engine, rules(), users_cache_seconds=3600)
        with caplog.at_level(logging.WARNING, logger="crmsync.prepared"):
            found = outcomes(directory)
        executed = counters(engine)["Com_execute_sql"]
        with engine.connect() as conn:
            assert conn.connection.info[directory._index_sql()[1].statement] is False
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET GLOBAL max_prepared_stmt_count = %d" % limit)
        engine.dispose()
    assert executed == 0
    assert caplog.text.count("max_prepared_stmt_count reached") == 1     # once per connection
    other = make_engine(indexed, pool_size=1)
    try:
        assert found == outcomes(as_text(Directory(other, rules(), users_cache_seconds=3600)))
    finally:
        other.dispose()


def test_only_mariadb_prepares(indexed, tmp_path, monkeypatch):
    statement = select(literal("x")).where(literal("y").like(bindparam("p", type_=String())))
    engine = create_engine("sqlite:///%s" % (tmp_path / "x.sqlite"))
    assert type(prepared.read_for(engine, statement, "SQL", {}, "p")) is prepared.TextRead
    mariadb = make_engine(indexed, pool_size=1)
    try:
        with mariadb.connect():
            pass                                        # SQLAlchemy learns the server's kind on connect
        assert isinstance(prepared.read_for(mariadb, statement, "SQL", {}, "p"), prepared.PreparedRead)
        monkeypatch.setattr(mariadb.dialect, "is_mariadb", False)      # MySQL: user variables only
        assert type(prepared.read_for(mariadb, statement, "SQL", {}, "p")) is prepared.TextRead
    finally:
        mariadb.dispose()


def test_prepared_text_has_literal_constants_and_a_mark_per_use(indexed):
    engine = make_engine(indexed, pool_size=1)
    try:
        p = bindparam("p", type_=String())
        statement = select(literal("it's")).where(literal("a").like(p), literal("b").like(p), literal(3) == 3)
        sql, uses = prepared.prepared_text(statement, engine.dialect, "p")
        assert uses == 2 and sql.count("?") == 2
        assert "'it''s'" in sql or "'it\\'s'" in sql
        with engine.connect() as conn:        # the server accepts it as one statement
            conn.exec_driver_sql("PREPARE crmagi_test FROM %s", (sql,))
            assert conn.exec_driver_sql("EXECUTE crmagi_test USING 'a', 'b'").all() == [("it's",)]
            conn.exec_driver_sql("DEALLOCATE PREPARE crmagi_test")
        percent = select(literal("50%")).where(literal("a").like(p))
        assert prepared.prepared_text(percent, engine.dialect, "p") is None
    finally:
        engine.dispose()
