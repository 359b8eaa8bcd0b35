"""crmsync.calls.CallStore against a real MariaDB with the SuiteCRM 7.14.6 schema."""
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

import gevent
import pytest
from sqlalchemy import text

from crmsync.calls import CallStore
from crmsync.db import CrmUnavailable, make_engine
from crmsync.models import CallRecord

SALLY, CHRIS = "seed_sally_id", "seed_chris_id"
TABLES = ("calls", "calls_contacts", "calls_leads", "calls_users", "crmagi_calls")


@pytest.fixture(scope="module")
def engine(crm_url_module):
    engine = make_engine(crm_url_module, pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def store(engine):
    store = CallStore(engine)
    store.ensure_tables()
    return store


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(text(sql), params).mappings()]


def one(engine, sql, **params):
    found = rows(engine, sql, **params)
    assert len(found) == 1, found
    return found[0]


def first_id(engine, table):
    return one(engine, "SELECT id FROM %s WHERE deleted=0 ORDER BY id LIMIT 1" % table)["id"]


def snapshot(engine, call_id):
    return {table: rows(engine, "SELECT * FROM %s WHERE %s = :c ORDER BY 1" % (
        table, "id" if table == "calls" else "call_id"), c=call_id) for table in TABLES}


def now_utc():
    return datetime.now(timezone.utc).replace(microsecond=0)


def make_rec(**kw):
    base = dict(call_id=str(uuid.uuid4()), linkedid="1700000000.%d" % (uuid.uuid4().int % 10**6),
                uniqueid="1700000000.9", direction="Inbound", number="+4930111111",
                started_at=now_utc() - timedelta(seconds=90), did="+4930999000", extension="201",
                assigned_user_id=SALLY, lookup_status="found")
    base.update(kw)
    return CallRecord(**base)


def contact_rec(engine, **kw):
    values = dict(parent_module="Contacts", parent_id=first_id(engine, "contacts"),
                  parent_name="Anna O'Neil", link_table="calls_contacts", link_column="contact_id")
    values.update(kw)
    return make_rec(**values)


def ended(rec, **kw):
    values = dict(ended_at=rec.started_at + timedelta(seconds=75), dial_status="ANSWER",
                  talk_seconds=65, ring_seconds=10, answered_extension="201",
                  recording="/var/spool/asterisk/monitor/x.wav", hangup_cause="16")
    values.update(kw)
    return CallRecord(**{**rec.__dict__, **values})


def naive(value):
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def test_contact_call_rows_match_suitecrm(engine, store):
    rec = contact_rec(engine)
    assert store.start(rec) is True

    call = one(engine, "SELECT * FROM calls WHERE id=:c", c=rec.call_id)
    assert call["name"] == "Inbound call from Anna O'Neil (+4930111111)"
    assert (call["status"], call["direction"], call["deleted"]) == ("Planned", "Inbound", 0)
    assert (call["parent_type"], call["parent_id"]) == ("Contacts", rec.parent_id)
    assert (call["assigned_user_id"], call["created_by"], call["modified_user_id"]) == (SALLY, "1", "1")
    assert (call["duration_hours"], call["duration_minutes"]) == (0, 0)
    assert call["date_start"] == naive(rec.started_at) == call["date_end"]
    assert abs(call["date_entered"] - datetime.utcnow()) < timedelta(seconds=10)
    assert call["date_modified"] == call["date_entered"]
    assert "DID: +4930999000" in call["description"]

    link = one(engine, "SELECT * FROM calls_contacts WHERE call_id=:c", c=rec.call_id)
    assert link["contact_id"] == rec.parent_id
    assert (link["deleted"], link["accept_status"], link["required"]) == (0, "none", "1")
    assert abs(link["date_modified"] - datetime.utcnow()) < timedelta(seconds=10)
    user = one(engine, "SELECT * FROM calls_users WHERE call_id=:c", c=rec.call_id)
    assert (user["user_id"], user["accept_status"], user["deleted"], user["required"]) == \
        (SALLY, "accept", 0, "1")

    assert store.finish(ended(rec)) is True
    call = one(engine, "SELECT * FROM calls WHERE id=:c", c=rec.call_id)
    assert (call["status"], call["duration_hours"], call["duration_minutes"]) == ("Held", 0, 2)
    assert call["date_end"] == naive(rec.started_at + timedelta(seconds=75))
    assert "Talk time: 65 s" in call["description"]
    # The contact's History subpanel query (ForHistory: status Held/Not Held via calls_contacts).
    history = rows(engine, "SELECT c.id FROM calls c JOIN calls_contacts cc ON cc.call_id=c.id "
                   "AND cc.deleted=0 WHERE cc.contact_id=:p AND c.deleted=0 "
                   "AND c.status IN ('Held','Not Held')", p=rec.parent_id)
    assert {"id": rec.call_id} in history


def test_lead_call_uses_calls_leads(engine, store):
    lead = first_id(engine, "leads")
    rec = make_rec(parent_module="Leads", parent_id=lead, parent_name="Phyllis Acuff",
                   link_table="calls_leads", link_column="lead_id")
    assert store.start(rec)
    call = one(engine, "SELECT parent_type, parent_id FROM calls WHERE id=:c", c=rec.call_id)
    assert call == {"parent_type": "Leads", "parent_id": lead}
    link = one(engine, "SELECT * FROM calls_leads WHERE call_id=:c", c=rec.call_id)
    assert (link["lead_id"], link["deleted"], link["accept_status"], link["required"]) == \
        (lead, 0, "none", "1")
    assert rows(engine, "SELECT id FROM calls_contacts WHERE call_id=:c", c=rec.call_id) == []


def test_account_call_is_parent_only(engine, store):
    account = first_id(engine, "accounts")
    rec = make_rec(parent_module="Accounts", parent_id=account, parent_name="5D Investments")
    assert store.start(rec)
    store.finish(ended(rec, dial_status="NOANSWER", talk_seconds=None))
    call = one(engine, "SELECT parent_type, parent_id, status, name FROM calls WHERE id=:c",
               c=rec.call_id)
    assert call == {"parent_type": "Accounts", "parent_id": account, "status": "Not Held",
                    "name": "Missed call from 5D Investments (+4930111111)"}
    for table in ("calls_contacts", "calls_leads"):
        assert rows(engine, "SELECT id FROM %s WHERE call_id=:c" % table, c=rec.call_id) == []
    assert store.get(rec.call_id).outcome == "missed"


def test_unknown_caller_without_parent_or_user(engine, store):
    rec = make_rec(assigned_user_id=None, lookup_status="unknown")
    assert store.start(rec)
    call = one(engine, "SELECT parent_type, parent_id, assigned_user_id FROM calls WHERE id=:c",
               c=rec.call_id)
    assert call == {"parent_type": None, "parent_id": None, "assigned_user_id": None}
    assert rows(engine, "SELECT id FROM calls_users WHERE call_id=:c", c=rec.call_id) == []


def test_dates_are_utc_whatever_the_process_tz(engine, store):
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff == 9 * 3600
        rec = make_rec(started_at=datetime.now(timezone.utc))
        store.start(rec)
        store.finish(ended(rec, ended_at=datetime.now(timezone.utc)))
        utcnow = datetime.utcnow()
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
    call = one(engine, "SELECT * FROM calls WHERE id=:c", c=rec.call_id)
    for column in ("date_entered", "date_modified", "date_start", "date_end"):
        assert abs(call[column] - utcnow) < timedelta(seconds=10), column
    user = one(engine, "SELECT date_modified FROM calls_users WHERE call_id=:c", c=rec.call_id)
    assert abs(user["date_modified"] - utcnow) < timedelta(seconds=10)


def test_long_name_and_emoji_are_written_in_strict_mode(engine, store):
    assert "STRICT_TRANS_TABLES" in one(engine, "SELECT @@sql_mode AS m")["m"]
    name = "Anna \U0001F600 O'Neil-" + "x" * 60
    rec = contact_rec(engine, parent_name=name, number="+49301111112222",
                      recording="/rec/\U0001F600.wav")
    assert store.start(rec)
    store.finish(ended(rec, recording="/rec/\U0001F600.wav"))
    call = one(engine, "SELECT name, description FROM calls WHERE id=:c", c=rec.call_id)
    assert len(call["name"]) == 50
    assert call["name"].startswith("Inbound call from Anna O'Neil-x")
    assert call["name"].endswith("(+49301111112222)")
    assert "\U0001F600" not in call["description"]
    assert store.get(rec.call_id).parent_name.startswith("Anna  O'Neil-")


def test_start_twice_is_one_call(engine, store):
    rec = contact_rec(engine)
    assert store.start(rec) is True
    before = snapshot(engine, rec.call_id)
    assert store.start(rec) is False
    assert snapshot(engine, rec.call_id) == before
    assert [len(before[t]) for t in TABLES] == [1, 1, 0, 1, 1]


def test_concurrent_duplicate_starts_do_not_raise(engine, store):
    rec = contact_rec(engine)
    workers = [gevent.spawn(store.start, rec) for _ in range(6)]
    gevent.joinall(workers, raise_error=True)
    assert sorted(w.value for w in workers) == [False] * 5 + [True]
    assert [len(v) for v in snapshot(engine, rec.call_id).values()] == [1, 1, 0, 1, 1]


def test_concurrent_finishes_of_a_missing_call(engine, store):
    rec = contact_rec(engine)
    done = ended(rec)
    workers = [gevent.spawn(store.finish, done) for _ in range(4)]
    workers.append(gevent.spawn(store.start, rec))
    gevent.joinall(workers, raise_error=True)
    assert [w.value for w in workers[:4]].count(True) == 1
    assert [len(v) for v in snapshot(engine, rec.call_id).values()] == [1, 1, 0, 1, 1]
    assert snapshot(engine, rec.call_id)["calls"][0]["status"] == "Held"


def test_concurrent_finishes_of_missing_calls_land_every_time(engine, store):
    # CI once saw the test above fail: the finishes each took the gap lock of their
    # FOR UPDATE on the missing row and deadlocked on insert more often than they retried.
    for _ in range(8):
        rec = contact_rec(engine)
        workers = [gevent.spawn(store.finish, ended(rec)) for _ in range(8)]
        workers.append(gevent.spawn(store.start, rec))
        gevent.joinall(workers, raise_error=True)
        assert [w.value for w in workers[:8]].count(True) == 1
        assert [len(v) for v in snapshot(engine, rec.call_id).values()] == [1, 1, 0, 1, 1]


def test_finish_before_start_is_one_complete_call(engine, store):
    rec = contact_rec(engine)
    assert store.finish(ended(rec)) is True
    after_finish = snapshot(engine, rec.call_id)
    assert [len(after_finish[t]) for t in TABLES] == [1, 1, 0, 1, 1]
    call = after_finish["calls"][0]
    assert (call["status"], call["parent_type"], call["duration_minutes"]) == ("Held", "Contacts", 2)
    assert call["date_start"] == naive(rec.started_at)
    # The late start changes nothing.
    assert store.start(rec) is False
    assert snapshot(engine, rec.call_id) == after_finish
    got = store.get(rec.call_id)
    assert (got.status, got.outcome, got.talk_seconds, got.started_at) == \
        ("Held", "answered", 65, rec.started_at)


def test_finish_twice_gives_the_same_rows(engine, store):
    rec = contact_rec(engine)
    store.start(rec)
    done = ended(rec, answered_user_id=CHRIS, answered_extension="202")
    assert store.finish(done) is True
    first = snapshot(engine, rec.call_id)
    time.sleep(1.1)     # a re-applied finish would show in date_modified
    assert store.finish(done) is False
    assert snapshot(engine, rec.call_id) == first


def test_answering_user_takes_the_call_and_both_stay_linked(engine, store):
    rec = contact_rec(engine)
    store.start(rec)
    store.finish(ended(rec, answered_user_id=CHRIS, answered_extension="202"))
    call = one(engine, "SELECT assigned_user_id FROM calls WHERE id=:c", c=rec.call_id)
    assert call["assigned_user_id"] == CHRIS
    users = rows(engine, "SELECT user_id, accept_status, deleted FROM calls_users "
                 "WHERE call_id=:c ORDER BY user_id", c=rec.call_id)
    assert users == [{"user_id": CHRIS, "accept_status": "accept", "deleted": 0},
                     {"user_id": SALLY, "accept_status": "accept", "deleted": 0}]


def test_answered_by_the_assigned_user_adds_no_link(engine, store):
    rec = contact_rec(engine)
    store.start(rec)
    store.finish(ended(rec, answered_user_id=SALLY))
    assert len(rows(engine, "SELECT id FROM calls_users WHERE call_id=:c", c=rec.call_id)) == 1


def test_missed_queue_call_and_answered_queue_call(engine, store):
    missed = make_rec()
    store.finish(ended(missed, dial_status="", talk_seconds=None, answered_extension=None))
    got = store.get(missed.call_id)
    assert (got.status, got.outcome) == ("Not Held", "missed")
    call = one(engine, "SELECT name, status, duration_minutes FROM calls WHERE id=:c",
               c=missed.call_id)
    assert call == {"name": "Missed call from +4930111111", "status": "Not Held",
                    "duration_minutes": 0}
    queued = make_rec()
    store.finish(ended(queued, dial_status=None, talk_seconds=5))
    assert one(engine, "SELECT status, duration_minutes FROM calls WHERE id=:c",
               c=queued.call_id) == {"status": "Held", "duration_minutes": 1}


def test_get_round_trips_the_record(engine, store):
    rec = contact_rec(engine)
    assert store.get(rec.call_id) is None
    store.start(rec)
    got = store.get(rec.call_id)
    assert got == CallRecord(**{**rec.__dict__, "status": "Planned"})
    done = ended(rec)
    store.finish(done)
    assert store.get(rec.call_id) == CallRecord(**{**done.__dict__, "status": "Held",
                                                   "outcome": "answered"})


def test_call_id_for_is_deterministic():
    first = CallStore.call_id_for("pbx1", "1700000000.12")
    assert first == CallStore.call_id_for("pbx1", "1700000000.12")
    assert first != CallStore.call_id_for("pbx2", "1700000000.12")
    assert first != CallStore.call_id_for("pbx1", "1700000000.13")
    assert str(uuid.UUID(first)) == first and len(first) == 36


def test_database_down_raises_crm_unavailable():
    engine = make_engine("mysql+pymysql://root@127.0.0.1:1/x", connect_timeout=1)
    store = CallStore(engine)
    with pytest.raises(CrmUnavailable) as info:
        store.start(make_rec())
    assert info.value.__cause__ is not None
    with pytest.raises(CrmUnavailable):
        store.get("x")
    engine.dispose()
