"""Live updates from the AMI call model onto real SuiteCRM rows: idempotent, transfer-aware."""
import uuid

import gevent
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from crmsync.calls import CallStore
from crmsync.db import make_engine
from crmsync.livecalls import LiveCalls
from crmsync.models import CallRecord, LiveBatch, LiveUpdate
from crmsync.spool import Spool
from crmsync.writer import CallWriter

SALLY, CHRIS = "seed_sally_id", "seed_chris_id"
PATSY = "13ca4a4c-562d-57d3-c959-6b082d7b086f"


@pytest.fixture(scope="module")
def engine(crm_url_module):
    engine = make_engine(crm_url_module, pool_size=5)
    CallStore(engine).ensure_tables()
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine):
    return CallStore(engine)


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def started(store):
    rec = CallRecord(call_id=str(uuid.uuid4()), linkedid="1795699250.%d" % (uuid.uuid4().int % 999),
                     uniqueid="1795699250.1", direction="Inbound", number="+4930555555",
                     started_at=datetime.now(timezone.utc) - timedelta(seconds=30), did="4930123400",
                     parent_module="Contacts", parent_id=PATSY, parent_name="Patsy Beauchesne",
                     link_table="calls_contacts", link_column="contact_id", assigned_user_id=SALLY,
                     lookup_status="found")
    assert store.start(rec)
    return rec


def state(engine, call_id):
    call = rows(engine, "SELECT assigned_user_id FROM calls WHERE id=:c", c=call_id)[0]
    extra = rows(engine, "SELECT answered_extension, transfer_extension, transfer_user_id, transfers,"
                         " recording, campaign, lead_source, did_group FROM crmagi_calls WHERE call_id=:c",
                 c=call_id)[0]
    users = sorted(r["user_id"] for r in rows(engine, "SELECT user_id FROM calls_users WHERE call_id=:c"
                                                      " AND deleted=0", c=call_id))
    return call["assigned_user_id"], extra, users


def test_answer_then_transfer_moves_the_call_and_replays_change_nothing(engine, store):
    live = LiveCalls(store)
    rec = started(store)
    updates = [LiveUpdate(rec.call_id, "answered", extension="101", user_id=SALLY),
               LiveUpdate(rec.call_id, "transferred", extension="104", user_id=CHRIS),
               LiveUpdate(rec.call_id, "recording", path="/var/spool/asterisk/monitor/x.wav"),
               LiveUpdate(rec.call_id, "attribution", did="4930123400", campaign="camp-1",
                          lead_source="Web Site", group="Sales")]
    for change in updates:
        assert live.apply(change)
    once = state(engine, rec.call_id)
    for change in updates:                      # a reconnect replays the call's events
        assert live.apply(change)
    assert state(engine, rec.call_id) == once
    owner, extra, users = once
    assert owner == CHRIS and users == [CHRIS, SALLY]
    assert (extra["answered_extension"], extra["transfer_extension"], extra["transfers"]) == ("101", "104", 1)
    assert (extra["campaign"], extra["lead_source"], extra["did_group"]) == ("camp-1", "Web Site", "Sales")


def _updates(call_id):
    return [LiveUpdate(call_id, "recording", path="/var/spool/asterisk/monitor/y.wav"),
            LiveUpdate(call_id, "answered", extension="101", user_id=SALLY),
            LiveUpdate(call_id, "transferred", extension="104", user_id=CHRIS),
            LiveUpdate(call_id, "answered", extension="104", user_id=CHRIS)]


def test_a_batch_of_one_calls_updates_gives_the_rows_of_its_updates_one_by_one(engine, store, monkeypatch):
    live, one_by_one, batched = LiveCalls(store), started(store), started(store)
    for change in _updates(one_by_one.call_id):
        assert live.apply(change)
    from crmsync import sqlbatch
    transactions = []
    real = sqlbatch.transaction

    def counted(engine_):
        transactions.append(1)
        return real(engine_)
    monkeypatch.setattr(sqlbatch, "transaction", counted)
    assert live.apply(LiveBatch.of(_updates(batched.call_id)))
    assert len(transactions) == 1
    assert state(engine, batched.call_id) == state(engine, one_by_one.call_id)
    owner, extra, _ = state(engine, batched.call_id)
    assert (owner, extra["answered_extension"], extra["transfers"]) == (CHRIS, "101", 1)
    assert live.apply(LiveBatch.of(_updates(batched.call_id)))       # replayed: no change
    assert state(engine, batched.call_id) == state(engine, one_by_one.call_id)


def test_a_batch_mixing_two_calls_is_refused(store):
    batch = LiveBatch("a", (LiveUpdate("a", "answered", "101"), LiveUpdate("b", "answered", "102")))
    with pytest.raises(ValueError):
        LiveCalls(store).apply(batch)


def test_a_spooled_batch_is_replayed_whole(engine, store, tmp_path):
    rec = started(store)
    spool = Spool(str(tmp_path / "spool.sqlite"))
    writer = CallWriter(store, spool, live=LiveCalls(store))
    batch = LiveBatch.of(_updates(rec.call_id))
    spool.push("live", batch.to_json())
    assert writer.flush() == 1 and len(spool) == 0
    owner, extra, users = state(engine, rec.call_id)
    assert (owner, extra["recording"], users) == (CHRIS, "/var/spool/asterisk/monitor/y.wav", [CHRIS, SALLY])


def test_a_second_transfer_counts_and_moves_the_call_again(engine, store):
    """The rules live in the WHERE clauses of one packet: a different transfer target after a
    first transfer is a change (counted, reassigned), the same one again is not."""
    live = LiveCalls(store)
    rec = started(store)
    for extension, user in (("104", CHRIS), ("101", SALLY), ("101", SALLY)):
        assert live.apply(LiveUpdate(rec.call_id, "transferred", extension=extension, user_id=user))
    owner, extra, users = state(engine, rec.call_id)
    assert owner == SALLY and users == [CHRIS, SALLY]
    assert (extra["transfer_extension"], extra["transfers"]) == ("101", 2)
    assert live.apply(LiveUpdate(rec.call_id, "answered", extension="104", user_id=CHRIS))
    owner, extra, _ = state(engine, rec.call_id)       # answered after a transfer: the owner stays
    assert owner == SALLY and extra["answered_extension"] == "104"


def test_hangup_after_attended_transfer_keeps_the_new_owner(engine, store):
    """After an attended transfer the caller's DIALEDPEERNUMBER still names 101: the hangup
    must not give the call back to 101's user."""
    rec = started(store)
    LiveCalls(store).apply(LiveUpdate(rec.call_id, "transferred", extension="104", user_id=CHRIS))
    rec.ended_at, rec.dial_status, rec.talk_seconds = datetime.now(timezone.utc), "ANSWER", 40
    rec.answered_extension, rec.answered_user_id = "101", SALLY
    assert store.finish(rec)
    owner, _, users = state(engine, rec.call_id)
    assert owner == CHRIS and users == [CHRIS, SALLY]


def test_update_for_an_unknown_call_changes_nothing(store):
    assert LiveCalls(store).apply(LiveUpdate(str(uuid.uuid4()), "answered", "101", SALLY)) is False


def test_writer_drops_live_updates_of_calls_it_never_saw(engine, store, tmp_path):
    writer = CallWriter(store, Spool(str(tmp_path / "s.sqlite")), timeout=2, live=LiveCalls(store))
    assert writer.submit_live(LiveUpdate(str(uuid.uuid4()), "answered", "101", SALLY))
    assert writer.pending() == 0


def test_live_update_waits_behind_a_spooled_start(engine, store, tmp_path):
    spool = Spool(str(tmp_path / "s.sqlite"))
    down = CallStore(make_engine("mysql+pymysql://root@127.0.0.1:1/x", connect_timeout=0.5))
    rec = CallRecord(call_id=str(uuid.uuid4()), linkedid="1795699260.1", uniqueid="1795699260.1",
                     direction="Inbound", number="+4930555555", started_at=datetime.now(timezone.utc),
                     assigned_user_id=SALLY)
    assert not CallWriter(down, spool, timeout=1).submit("start", rec)
    writer = CallWriter(store, spool, timeout=2, live=LiveCalls(store))
    assert not writer.submit_live(LiveUpdate(rec.call_id, "transferred", "104", CHRIS))
    assert writer.pending() == 2
    assert writer.flush() == 2
    owner, extra, _ = state(engine, rec.call_id)
    assert owner == CHRIS and extra["transfer_extension"] == "104"


def test_an_awaited_update_waits_for_the_row_another_worker_writes(engine, store, tmp_path):
    """With [agi] workers > 1 only worker 0 follows AMI: an update of a call another worker
    took may arrive while that worker's start is in flight or spooled (its own spool file).
    Marked ``awaited`` (the call ran crmagi's include), it is kept and applied once the row
    is there, instead of being dropped as the update of a call crmagi never saw."""
    rec = CallRecord(call_id=str(uuid.uuid4()), linkedid="1795699270.1", uniqueid="1795699270.1",
                     direction="Inbound", number="+4930555555", started_at=datetime.now(timezone.utc),
                     assigned_user_id=SALLY)
    ami_worker = CallWriter(store, Spool(str(tmp_path / "w0.sqlite")), timeout=2, live=LiveCalls(store),
                            flush_interval=0.01)
    assert not ami_worker.submit_live(LiveUpdate(rec.call_id, "answered", "104", CHRIS, awaited=True))
    gevent.sleep(0.02)
    assert ami_worker.pending() == 1 and ami_worker.flush() == 0      # still no row: kept, backing off
    [op] = ami_worker.spool.pending()
    assert op.attempts == 2 and "no row yet" in op.last_error
    down = CallStore(make_engine("mysql+pymysql://root@127.0.0.1:1/x", connect_timeout=0.5))
    other_worker = CallWriter(down, Spool(str(tmp_path / "w1.sqlite")), timeout=1)
    assert not other_worker.submit("start", rec)                      # the CRM was down for worker 1
    other_worker.store = store
    assert other_worker.flush() == 1                                  # ... and is back
    gevent.sleep(0.05)
    assert ami_worker.flush() == 1 and ami_worker.pending() == 0
    owner, extra, _ = state(engine, rec.call_id)
    assert owner == CHRIS and extra["answered_extension"] == "104"


def test_an_awaited_update_whose_row_never_comes_ends_in_the_dead_letters(store, tmp_path):
    writer = CallWriter(store, Spool(str(tmp_path / "s.sqlite")), timeout=2, live=LiveCalls(store),
                        flush_interval=0.001, max_attempts=3)
    writer.submit_live(LiveUpdate(str(uuid.uuid4()), "recording", path="/x.wav", awaited=True))
    for _ in range(3):
        gevent.sleep(0.01)
        writer.flush()
    assert writer.pending() == 0 and len(writer.spool.dead()) == 1
