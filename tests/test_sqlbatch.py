"""crmsync.sqlbatch: a transaction's statements and its COMMIT in one packet on MariaDB, one by
one on SQLite; a failing statement leaves nothing of its transaction; driver errors reach the
metrics hook (watch_errors) although SQLAlchemy never sees them."""
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import text

from crmsync import sqlbatch
from crmsync.db import make_engine, watch_errors

TABLE = "CREATE TABLE t (id VARCHAR(36) PRIMARY KEY, name VARCHAR(10), at DATETIME)"


def _with_table(url, create=TABLE):
    """An engine on ``url`` whose table (``t`` unless named in ``create``) is new and empty."""
    engine = make_engine(url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS %s" % create.split()[2]))
        conn.execute(text(create))
    return engine


@pytest.fixture(params=["mariadb", "sqlite"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "crm.sqlite")
    else:
        url = request.getfixturevalue("crm_url_module")
    engine = _with_table(url)
    yield engine
    engine.dispose()


@pytest.fixture
def mariadb(crm_url_module):
    """``engine`` on MariaDB only: what the packet forms of crmsync/dialect/mysql.py do there."""
    engine = _with_table(crm_url_module)
    yield engine
    engine.dispose()


@pytest.fixture
def lit_engine(crm_url_module):
    """A MariaDB engine with ``lit`` (n, v TEXT utf8mb4) for hostile values, dropped after."""
    engine = _with_table(crm_url_module, "CREATE TABLE lit (n INT PRIMARY KEY, v TEXT) CHARACTER SET utf8mb4")
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS lit"))
    engine.dispose()


def names(engine):
    with engine.connect() as conn:
        return sorted(row[0] for row in conn.execute(text("SELECT name FROM t")))


def packets(engine, monkeypatch):
    """The SQL texts sent to the server (MariaDB: one per round trip)."""
    sent = []
    if engine.dialect.name == "sqlite":
        return sent
    import pymysql.connections

    real = pymysql.connections.Connection.query

    def query(self, sql, unbuffered=False):
        sent.append(sql)
        return real(self, sql, unbuffered)
    monkeypatch.setattr(pymysql.connections.Connection, "query", query)
    return sent


def test_statements_and_commit_go_in_one_round_trip(engine, monkeypatch):
    sent = packets(engine, monkeypatch)
    at = datetime(2026, 12, 6, 8, 0, 0)
    with sqlbatch.transaction(engine) as tx:
        tx.commit([sqlbatch.insert("t", {"id": str(uuid.uuid4()), "name": "a'b", "at": at}),
                   sqlbatch.insert("t", {"id": str(uuid.uuid4()), "name": "c;d", "at": at})])
    if engine.dialect.name != "sqlite":
        assert len(sent) == 1 and sent[0].count("INSERT INTO `t`") == 2
        assert sent[0].startswith("BEGIN NOT ATOMIC ") and sent[0].endswith("COMMIT;\nEND")   # MariaDB
    assert names(engine) == ["a'b", "c;d"]


@pytest.fixture(params=["block", "plain"])
def packet_form(request, monkeypatch):
    """MariaDB's compound statement, or (as on MySQL, which has none) the plain multi-statement
    packet, on the same MariaDB server."""
    if request.param == "plain":
        from crmsync.dialect import mysql
        monkeypatch.setattr(mysql, "runs_blocks", lambda version: False)
    return request.param


def results_read(monkeypatch):
    """How many results (OK packets or result sets) PyMySQL reads, the first of each query too."""
    import pymysql.connections

    read = []
    real = pymysql.connections.Connection._read_query_result

    def counted(self, unbuffered=False):
        read.append(1)
        return real(self, unbuffered)
    monkeypatch.setattr(pymysql.connections.Connection, "_read_query_result", counted)
    return read


def test_mariadb_answers_a_transaction_packet_with_one_result(mariadb, packet_form, monkeypatch):
    """Each result costs PyMySQL a packet parse in Python: the compound statement gets one OK for
    three INSERTs and the COMMIT (four in the plain packet), and the same rows are committed."""
    read = results_read(monkeypatch)
    with sqlbatch.transaction(mariadb) as tx:
        tx.commit([sqlbatch.insert("t", {"id": str(n), "name": "v%d" % n}) for n in range(3)])
    assert len(read) == (1 if packet_form == "block" else 4)
    assert names(mariadb) == ["v0", "v1", "v2"]


def test_a_leading_locking_read_gives_its_rows_in_either_packet(mariadb, packet_form):
    """A live update's probe: its SELECT ... FOR UPDATE first, its writes after, one packet."""
    with sqlbatch.transaction(mariadb) as tx:
        tx.commit([sqlbatch.insert("t", {"id": "a", "name": "x"})])
    lock = "SELECT name FROM t WHERE id = %s FOR UPDATE"
    for key, found in (("a", [("x",)]), ("none", [])):
        with sqlbatch.transaction(mariadb) as tx:
            assert tx.commit([(lock, (key,)), sqlbatch.update("t", {"name": "y"}, "id", key)]) == found
    assert names(mariadb) == ["y"]


def test_hostile_values_round_trip_through_a_transaction_packet(lit_engine, packet_form):
    """Quotes, semicolons, END, line breaks and NULs in values stay values inside the block."""
    values = HOSTILE + ["END", "x'; END; COMMIT; BEGIN NOT ATOMIC SELECT 1; END; --", "\\", "END\n;"]
    with sqlbatch.transaction(lit_engine) as tx:
        tx.commit([sqlbatch.insert("lit", {"n": n, "v": v}) for n, v in enumerate(values)])
    with lit_engine.connect() as conn:
        assert [row[0] for row in conn.execute(text("SELECT v FROM lit ORDER BY n"))] == values


@pytest.mark.parametrize("version, runs", [
    ("5.5.5-10.11.19-MariaDB-0+deb12u1", True), ("11.4.2-MariaDB-ubu2404", True),
    ("5.5.5-10.1.1-MariaDB", True), ("5.5.5-10.0.38-MariaDB", False), ("8.0.36", False),
    ("8.4.0-MySQL", False), ("", False), (None, False)])
def test_only_mariadb_from_10_1_1_gets_the_compound_statement(version, runs):
    from crmsync.dialect.mysql import runs_blocks
    assert runs_blocks(version) is runs


def test_several_locking_reads_go_in_one_round_trip_with_their_rows_each(engine, monkeypatch):
    with sqlbatch.transaction(engine) as tx:
        tx.commit([sqlbatch.insert("t", {"id": "a", "name": "x;y"}), sqlbatch.insert("t", {"id": "b", "name": "z"})])
    sent = packets(engine, monkeypatch)
    with sqlbatch.transaction(engine) as tx:
        sets = tx.read_sets([("SELECT name FROM t WHERE id = %s FOR UPDATE", ("a",)),
                             ("SELECT id FROM t WHERE name = %s FOR UPDATE", ("none';--",)),
                             ("SELECT id, name FROM t WHERE id IN (%s, %s) ORDER BY id FOR UPDATE", ("a", "b"))])
        tx.commit([sqlbatch.update("t", {"name": "w"}, "id", "b")])
    assert sets == [[("x;y",)], [], [("a", "x;y"), ("b", "z")]]
    if engine.dialect.name != "sqlite":
        assert len(sent) == 2 and sent[0].count("SELECT") == 3      # the reads, then the writes
    assert names(engine) == ["w", "x;y"]


def test_a_failing_statement_leaves_nothing_of_its_transaction(engine):
    first = str(uuid.uuid4())
    with sqlbatch.transaction(engine) as tx:
        tx.commit([sqlbatch.insert("t", {"id": first, "name": "kept"})])
    with pytest.raises(Exception) as raised:
        with sqlbatch.transaction(engine) as tx:
            tx.commit([sqlbatch.update("t", {"name": "changed"}, "id", first),
                       sqlbatch.insert("t", {"id": str(uuid.uuid4()), "name": "new"}),
                       sqlbatch.insert("t", {"id": first, "name": "dup"})])      # duplicate key
    assert "Duplicate" in str(raised.value) or "UNIQUE" in str(raised.value)
    assert names(engine) == ["kept"]
    # The connection went back to the pool usable, its transaction rolled back.
    with sqlbatch.transaction(engine) as tx:
        assert tx.read("SELECT name FROM t WHERE id = %s FOR UPDATE", (first,)) == [("kept",)]


def test_a_read_without_writes_is_ended(engine):
    with sqlbatch.transaction(engine) as tx:
        assert tx.read("SELECT COUNT(*) AS n FROM t", (), names=True) == [{"n": 0}]
    with engine.begin() as conn:        # no lock or open transaction left behind
        conn.execute(text("DELETE FROM t"))


def test_driver_errors_reach_the_metrics_hook_but_duplicates_do_not(engine):
    seen = []
    watch_errors(engine, seen.append)
    row = {"id": "x", "name": "once"}
    with sqlbatch.transaction(engine) as tx:
        tx.commit([sqlbatch.insert("t", row)])
    with pytest.raises(Exception):
        with sqlbatch.transaction(engine) as tx:
            tx.commit([sqlbatch.insert("t", row)])          # a replayed write: not an error
    with pytest.raises(Exception):
        with sqlbatch.transaction(engine) as tx:
            tx.commit([sqlbatch.insert("missing_table", row)])
    assert len(seen) == 1 and seen[0] in ("ProgrammingError", "OperationalError")


HOSTILE = ["", "plain", "a'b", 'a"b', "back\\slash", "nul\x00byte", "ctrl-z\x1a", "line\nbreak\r",
           "'; DROP TABLE t; --", "\\'", "%s %(x)s %%", "Müller Ωμέγα 😀", "".join(map(chr, range(256)))]
OTHERS = [0, -1, 2 ** 70, True, False, None, 1.5, datetime(2026, 12, 6, 8, 0, 0),
          datetime(2026, 12, 6, 8, 0, 0, 123), datetime(999, 1, 2, 3, 4, 5),
          datetime(2026, 12, 6, 8, 0, 0, tzinfo=timezone.utc), date(2026, 12, 6), Decimal("1.10"), b"by'tes"]


def test_literals_are_exactly_pymysqls_and_round_trip(lit_engine):
    """crmsync.dialect.mysql.literals writes the hot path's values without PyMySQL's dispatch
    per value: it must write what PyMySQL's own escape writes, for hostile strings and every type,
    also while the server is in NO_BACKSLASH_ESCAPES mode (quotes doubled, backslashes literal)."""
    from crmsync.dialect.mysql import literals

    raw = lit_engine.raw_connection()
    try:
        conn = raw.driver_connection
        for mode in ("", "NO_BACKSLASH_ESCAPES"):
            cursor = raw.cursor()
            cursor.execute("SET SESSION sql_mode = %s", (mode,))
            assert literals(conn, HOSTILE + OTHERS) == tuple(conn.escape(v) for v in HOSTILE + OTHERS)
            cursor.execute("DELETE FROM lit")
            for n, value in enumerate(HOSTILE):
                cursor.execute("INSERT INTO lit (n, v) VALUES (%s, %s)" % literals(conn, (n, value)))
            cursor.execute("SELECT v FROM lit ORDER BY n")
            assert [row[0] for row in cursor.fetchall()] == HOSTILE, mode
            raw.commit()
    finally:
        raw.close()
