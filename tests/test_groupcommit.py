"""crmsync.groupcommit: calls' writes that queue share one transaction, and one op's failure
stays its own (real MariaDB with the SuiteCRM 7.14.6 schema)."""
import time

import gevent
import pymysql
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import TimeoutError as PoolTimeout

from crmsync import groupcommit
from crmsync.calls import CallStore
from crmsync.db import CrmUnavailable, make_engine
from crmsync.livecalls import LiveCalls
from crmsync.missed import MissedCalls
from crmsync.models import LiveBatch, LiveUpdate
from tests.test_calls import CHRIS, contact_rec, ended, make_rec, one, snapshot


@pytest.fixture(scope="module")
def engine(crm_url_module):
    engine = make_engine(crm_url_module, pool_size=5)
    yield engine
    engine.dispose()


def store_with(engine, lanes, missed=None):
    store = CallStore(engine, missed=missed, write_lanes=lanes)
    store.ensure_tables()
    return store, store.group


def counted(group):
    """(transactions, ops) the group tried since the last call."""
    now = (group.transactions, group.ops)
    last = getattr(group, "_last_counted", (0, 0))
    group._last_counted = now
    return now[0] - last[0], now[1] - last[1]


def hold_lane(store, seconds=0.3):
    """A transaction that keeps the store's one lane busy for ``seconds``."""
    slow = groupcommit.Op(("hold",), [("SELECT SLEEP(%s)", (seconds,))], lambda sets: ([], "held"))
    holder = gevent.spawn(store.group.run, slow)
    gevent.sleep(0.05)
    return holder


def test_starts_that_queue_behind_a_busy_lane_share_one_transaction(engine):
    store, batches = store_with(engine, lanes=1)
    holder = hold_lane(store)
    recs = [contact_rec(engine) for _ in range(6)]
    starts = [gevent.spawn(store.start, rec) for rec in recs]
    gevent.joinall(starts + [holder], raise_error=True)
    assert holder.value == "held"
    assert [g.value for g in starts] == [True] * 6
    assert counted(batches) == (2, 7)            # the holder alone, then the six
    for rec in recs:
        rows = snapshot(engine, rec.call_id)
        assert len(rows["calls"]) == 1 and len(rows["crmagi_calls"]) == 1 and len(rows["calls_contacts"]) == 1
        assert rows["calls_users"][0]["user_id"] == rec.assigned_user_id


def test_a_duplicate_in_a_shared_transaction_is_false_and_the_others_are_written(engine):
    """The duplicate's INSERT fails the shared packet: it is rolled back and each start runs
    again alone, so the duplicate says False and the others commit."""
    store, batches = store_with(engine, lanes=1)
    done = contact_rec(engine)
    assert store.start(done) is True
    before = snapshot(engine, done.call_id)
    holder = hold_lane(store)
    fresh = [make_rec() for _ in range(3)]
    starts = [gevent.spawn(store.start, rec) for rec in (fresh[0], done, fresh[1], fresh[2])]
    gevent.joinall(starts + [holder], raise_error=True)
    assert [g.value for g in starts] == [True, False, True, True]
    # the first start, the holder, the four shared (rolled back), then each alone again
    assert counted(batches) == (7, 10)
    assert snapshot(engine, done.call_id) == before
    for rec in fresh:
        assert one(engine, "SELECT status FROM calls WHERE id = :c", c=rec.call_id)["status"] == "Planned"


def test_finishes_share_a_transaction_and_the_first_finish_still_wins(engine):
    store, batches = store_with(engine, lanes=1)
    recs = [contact_rec(engine, number="+49301112%04d" % i) for i in range(4)]
    for rec in recs:
        store.start(rec)
    assert store.finish(ended(recs[0], talk_seconds=5)) is True
    counted(batches)
    holder = hold_lane(store)
    finishes = [gevent.spawn(store.finish, ended(rec)) for rec in recs]
    gevent.joinall(finishes + [holder], raise_error=True)
    assert [g.value for g in finishes] == [False, True, True, True]
    assert counted(batches) == (2, 5)
    assert one(engine, "SELECT talk_seconds FROM crmagi_calls WHERE call_id = :c", c=recs[0].call_id)["talk_seconds"] == 5
    for rec in recs[1:]:
        row = one(engine, "SELECT status, talk_seconds FROM crmagi_calls WHERE call_id = :c", c=rec.call_id)
        assert row == {"status": "Held", "talk_seconds": 65}


def test_a_finish_before_its_start_inserts_the_call_from_a_shared_transaction(engine):
    store, batches = store_with(engine, lanes=1)
    started, early = contact_rec(engine), contact_rec(engine)
    store.start(started)
    holder = hold_lane(store)
    finishes = [gevent.spawn(store.finish, ended(rec)) for rec in (started, early)]
    gevent.joinall(finishes + [holder], raise_error=True)
    assert [g.value for g in finishes] == [True, True]
    for rec in (started, early):
        assert one(engine, "SELECT status FROM calls WHERE id = :c", c=rec.call_id)["status"] == "Held"


def test_live_updates_share_a_transaction_and_each_says_whether_its_call_exists(engine):
    """A live update's result is the rows of its own lock, read in the packet of its writes:
    in a shared transaction each finds its own among the others' results."""
    store, group = store_with(engine, lanes=1)
    live = LiveCalls(store)
    known = [contact_rec(engine) for _ in range(3)]
    for rec in known:
        store.start(rec)
    counted(group)
    holder = hold_lane(store)
    changes = [LiveBatch.of([LiveUpdate(rec.call_id, "answered", extension="104", user_id=CHRIS),
                             LiveUpdate(rec.call_id, "recording", path="/var/spool/asterisk/monitor/%d.wav" % n)])
               for n, rec in enumerate(known)]
    changes.insert(1, LiveUpdate(make_rec().call_id, "answered", extension="104", user_id=CHRIS))   # no row
    updates = [gevent.spawn(live.apply, change) for change in changes]
    gevent.joinall(updates + [holder], raise_error=True)
    assert [g.value for g in updates] == [True, False, True, True]
    assert counted(group) == (2, 5)
    for n, rec in enumerate(known):
        row = one(engine, "SELECT answered_extension, recording FROM crmagi_calls WHERE call_id = :c", c=rec.call_id)
        assert row == {"answered_extension": "104", "recording": "/var/spool/asterisk/monitor/%d.wav" % n}
        assert one(engine, "SELECT assigned_user_id FROM calls WHERE id = :c", c=rec.call_id)["assigned_user_id"] == CHRIS


def test_missed_calls_of_one_number_never_share_a_transaction(engine):
    """Both finishes read the number's open entry before writing: in one transaction the second
    would not see the first's entry and open a second one.  Their key keeps them apart."""
    missed = MissedCalls(engine, region="DE")
    store, batches = store_with(engine, lanes=1, missed=missed)
    number = "+4930555%05d" % (id(store) % 100000)
    recs = [contact_rec(engine, number=number) for _ in range(3)]
    for rec in recs:
        store.start(rec)
    counted(batches)
    holder = hold_lane(store)
    misses = [gevent.spawn(store.finish, ended(rec, dial_status="NOANSWER", talk_seconds=0, answered_extension=None))
              for rec in recs]
    gevent.joinall(misses + [holder], raise_error=True)
    assert [g.value for g in misses] == [True, True, True]
    assert counted(batches) == (4, 4)
    entry = one(engine, "SELECT attempts, open FROM crmagi_missed WHERE number = :n AND user_id = :u",
                n=number, u=recs[0].assigned_user_id)
    assert entry == {"attempts": 3, "open": 1}


def test_ops_that_share_a_key_wait_for_the_next_transaction():
    group = groupcommit.GroupCommit(engine=None, lanes=1)
    ops = [groupcommit.Op((key,), (), None) for key in ("b", "a", "b", "c", "a")]
    group._queue = [(op, None, 0.0) for op in ops]
    taken = group._take()
    assert [item[0].keys for item in taken] == [("a",), ("b",), ("c",)]      # in lock order
    assert [item[0] for item in group._queue] == [ops[2], ops[4]]             # still in arrival order


@pytest.mark.parametrize("exc, shared", [
    (pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"), True),
    (pymysql.err.OperationalError(2003, "Can't connect to MySQL server"), True),
    (PoolTimeout("QueuePool limit of size 5 overflow 5 reached"), True),
    (pymysql.err.IntegrityError(1062, "Duplicate entry"), False),
    (pymysql.err.OperationalError(1213, "Deadlock found"), False),
    (pymysql.err.DataError(1406, "Data too long"), False),
    (ValueError("a bug in one op's statements"), False),
])
def test_only_a_lost_connection_fails_every_op_of_a_shared_transaction(exc, shared):
    assert groupcommit.shared_by_all(exc) is shared


def test_a_lost_connection_is_every_queued_ops_error(engine, crm_url_module):
    """The server gone: each op would fail alone too, so none is tried again (a retry per op
    would cost each its connect timeout once more)."""
    store, batches = store_with(engine, lanes=1)
    holder = hold_lane(store, 0.2)
    dead = create_engine("mysql+pymysql://root@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    store.group.engine = dead
    recs = [make_rec() for _ in range(3)]
    starts = [gevent.spawn(store.start, rec) for rec in recs]
    gevent.joinall(starts + [holder])
    assert all(g.exception is not None and "Can't connect" in str(g.exception) for g in starts)
    assert counted(batches) == (2, 4)           # not each op alone once more


def test_a_write_waits_for_a_lane_no_longer_than_the_query_timeout(engine):
    """Behind a hung transaction (a table locked), queued ops give up after [crm] query_timeout
    without having begun, as a write of their own would on the driver's read timeout: the
    writer then spools them due, instead of holding them as writes that may still commit."""
    store, group = store_with(engine, lanes=1)
    group.wait = 0.2
    holder = hold_lane(store, 1.0)
    recs = [make_rec() for _ in range(2)]
    started = time.monotonic()
    starts = [gevent.spawn(store.start, rec) for rec in recs]
    gevent.joinall(starts)
    assert time.monotonic() - started < 0.5
    assert all(isinstance(g.exception, CrmUnavailable) and "waited 0.2s" in str(g.exception) for g in starts)
    holder.join()
    assert group._queue == []
    for rec in recs:
        assert snapshot(engine, rec.call_id)["crmagi_calls"] == []


def test_a_shared_transaction_ends_by_its_earliest_ops_deadline(engine):
    """An op taken from the queue late gets what is left of its wait as the read timeout of
    its transaction: it ends by then, as its own write would have on the driver's timeout."""
    store, group = store_with(engine, lanes=1)
    group.wait = 0.6
    holder = hold_lane(store, 0.4)
    slow = groupcommit.Op(("slow",), [("SELECT SLEEP(%s)", (2.0,))], lambda sets: ([], "slept"))
    started = time.monotonic()
    waiting = gevent.spawn(group.run, slow)
    waiting.join()
    assert 0.5 < time.monotonic() - started < 1.0
    assert isinstance(waiting.exception, pymysql.err.OperationalError) and waiting.exception.args[0] == 2013
    holder.join()
    assert holder.value == "held" and store.start(make_rec()) is True     # the pool's next connection works


def test_no_lanes_writes_each_op_alone_at_once(engine):
    store, batches = store_with(engine, lanes=0)
    recs = [make_rec() for _ in range(3)]
    starts = [gevent.spawn(store.start, rec) for rec in recs]
    gevent.joinall(starts, raise_error=True)
    assert [g.value for g in starts] == [True] * 3
    assert counted(batches) == (3, 3)


def test_sqlite_and_sql_server_never_share_transactions(tmp_path):
    sqlite = create_engine("sqlite:///%s" % (tmp_path / "crm.sqlite"))
    assert CallStore(sqlite, write_lanes=4).group.lanes == 0
