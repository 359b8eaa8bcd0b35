"""crmsync.spool: the durable queue, and CallWriter with a dead, hung and slow MariaDB."""
import logging
import socket
import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone

import gevent
import pymysql
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crmsync.calls import CallStore
from crmsync.db import make_engine
from crmsync.models import CallRecord
from crmsync.spool import CallWriter, Spool

DOWN_URL = "mysql+pymysql://root@127.0.0.1:1/x"
TIMEOUT = 0.5
MARGIN = 0.3


def make_rec(**kw):
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=60)
    base = dict(call_id=str(uuid.uuid4()), linkedid="1700000000.1", uniqueid="1700000000.1",
                direction="Inbound", number="+4930111111", started_at=started,
                assigned_user_id="seed_sally_id", lookup_status="unknown")
    base.update(kw)
    return CallRecord(**base)


def finished(rec):
    return CallRecord(**{**rec.__dict__, "ended_at": rec.started_at + timedelta(seconds=50),
                         "dial_status": "ANSWER", "talk_seconds": 40,
                         "answered_user_id": "seed_chris_id"})


def calls_rows(engine, call_id):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            text("SELECT id, status, assigned_user_id, duration_minutes FROM calls WHERE id=:c"),
            {"c": call_id}).mappings()]


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool" / "ops.sqlite")
    yield spool
    spool.close()


@pytest.fixture
def engine(crm_url):
    engine = make_engine(crm_url, pool_size=5, connect_timeout=1, query_timeout=3)
    yield engine
    engine.dispose()


def timed_submit(writer, kind, rec):
    began = time.monotonic()
    result = writer.submit(kind, rec)
    return result, time.monotonic() - began


# -- Spool ------------------------------------------------------------------------

def test_spool_is_a_durable_fifo(tmp_path):
    path = tmp_path / "ops.sqlite"
    spool = Spool(path)
    first = spool.push("start", {"call_id": "a", "n": 1})
    second = spool.push("finish", {"call_id": "a", "n": 2})
    assert len(spool) == 2 and first < second
    assert spool.peek(1) == [(first, "start", {"call_id": "a", "n": 1})]
    spool.bump(first, RuntimeError("boom"))
    spool.bump(first, "again")
    assert spool.attempts(first) == (2, "again")
    spool.close()

    reopened = Spool(path)      # survives a restart
    assert [op[1] for op in reopened.peek(10)] == ["start", "finish"]
    reopened.delete(first)
    assert reopened.peek(10) == [(second, "finish", {"call_id": "a", "n": 2})]
    assert reopened.attempts(first) is None
    reopened.close()
    raw = sqlite3.connect(str(path))
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_spool_settings_and_many_greenlets(spool):
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2     # FULL
    workers = [gevent.spawn(spool.push, "start", {"i": i}) for i in range(50)]
    gevent.joinall(workers, raise_error=True)
    assert len(spool) == 50
    assert sorted(p["i"] for _, _, p in spool.peek(100)) == list(range(50))


# -- CallWriter -------------------------------------------------------------------

def test_database_down_spools_then_replays_once(engine, spool, caplog):
    down = make_engine(DOWN_URL, connect_timeout=1)
    writer = CallWriter(CallStore(down), spool, timeout=TIMEOUT)
    rec = make_rec()
    caplog.set_level(logging.INFO, logger="crmsync.writer")
    for kind, value in (("start", rec), ("finish", finished(rec))):
        ok, took = timed_submit(writer, kind, value)
        assert ok is False and took < TIMEOUT + MARGIN
    assert writer.pending() == 2
    # Still down: nothing applied, only the oldest op is tried, one warning per streak.
    assert writer.flush() == 0
    assert writer.flush() == 0
    first_id = spool.peek(1)[0][0]
    assert spool.attempts(first_id)[0] == 2
    assert spool.attempts(spool.peek(2)[1][0])[0] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    down.dispose()

    healthy = CallWriter(CallStore(engine), spool, timeout=TIMEOUT)
    assert healthy.flush() == 2
    assert healthy.pending() == 0
    assert calls_rows(engine, rec.call_id) == [{"id": rec.call_id, "status": "Held",
                                               "assigned_user_id": "seed_chris_id",
                                               "duration_minutes": 1}]
    got = CallStore(engine).get(rec.call_id)
    assert (got.outcome, got.talk_seconds) == ("answered", 40)


def test_hung_database_submit_returns_within_timeout(engine, spool):
    # A server that completes the TCP handshake but never says hello: the driver waits.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)
    url = "mysql+pymysql://root@127.0.0.1:%d/x" % black_hole.getsockname()[1]
    hung = make_engine(url, connect_timeout=2)
    try:
        writer = CallWriter(CallStore(hung), spool, timeout=TIMEOUT)
        rec = make_rec()
        ok, took = timed_submit(writer, "start", rec)
        assert ok is False and took < TIMEOUT + MARGIN
        ok, took = timed_submit(writer, "finish", finished(rec))
        assert ok is False and took < TIMEOUT + MARGIN
        assert writer.pending() == 2
    finally:
        black_hole.close()
        gevent.sleep(0)
        hung.dispose()
    assert CallWriter(CallStore(engine), spool).flush() == 2
    assert len(calls_rows(engine, rec.call_id)) == 1


def test_locked_table_spools_and_flush_leaves_one_call(crm_url, engine, spool):
    store = CallStore(engine)
    store.ensure_tables()
    url = make_url(crm_url)
    locker = pymysql.connect(host=url.host, port=url.port, user=url.username,
                             database=url.database, autocommit=True)
    rec = make_rec()
    writer = CallWriter(store, spool, timeout=TIMEOUT)
    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLES calls WRITE")
        ok, took = timed_submit(writer, "start", rec)
        assert ok is False and took < TIMEOUT + MARGIN
        assert writer.pending() == 1
        with engine.connect() as conn:      # calls itself is locked against reads too
            assert conn.execute(text("SELECT COUNT(*) FROM crmagi_calls WHERE call_id=:c"),
                                {"c": rec.call_id}).scalar() == 0
    finally:
        with locker.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")
        locker.close()
    # The timed-out write may still complete now; the replay must not duplicate it.
    assert writer.flush() == 1
    assert writer.pending() == 0
    assert len(calls_rows(engine, rec.call_id)) == 1
    assert writer.submit("finish", finished(rec)) is True
    assert calls_rows(engine, rec.call_id)[0]["status"] == "Held"


def test_background_flusher_drains_and_stop_flushes(engine, spool):
    recs = [make_rec() for _ in range(3)]
    for rec in recs:
        spool.push("start", rec.to_json())
    writer = CallWriter(CallStore(engine), spool, timeout=TIMEOUT, flush_interval=0.05).start()
    deadline = time.monotonic() + 10
    while writer.pending() and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert writer.pending() == 0
    spool.push("finish", finished(recs[0]).to_json())
    writer.stop()
    assert writer.pending() == 0
    assert calls_rows(engine, recs[0].call_id)[0]["status"] == "Held"
    assert all(len(calls_rows(engine, rec.call_id)) == 1 for rec in recs)


def test_submit_never_raises(spool):
    class Broken:
        def start(self, rec):
            raise RuntimeError("bug")
        finish = start

    writer = CallWriter(Broken(), spool, timeout=TIMEOUT)
    assert writer.submit("start", make_rec()) is False
    assert writer.submit("bogus", make_rec()) is False
    assert writer.submit("finish", object()) is False
    assert writer.pending() == 1


def test_undecodable_op_is_dropped_not_blocking(engine, spool):
    spool.push("start", {"nonsense": True})
    spool.push("rewind", make_rec().to_json())
    rec = make_rec()
    spool.push("start", rec.to_json())
    assert CallWriter(CallStore(engine), spool).flush() == 1
    assert len(spool) == 0
    assert len(calls_rows(engine, rec.call_id)) == 1
