"""crmsync.missed: missed inbound calls open alerts and list entries; a connected call closes
them.  Real MariaDB with the SuiteCRM 7.14.6 schema (its real ``alerts`` table)."""
import uuid
from datetime import datetime, timedelta, timezone

import gevent
import pytest

from crmsync.calls import CallStore
from crmsync.missed import MissedCalls, number_key
from crmsync.models import CallRecord
from test_calls import engine, rows  # noqa: F401 - the module's engine fixture

SALLY, MAX, CHRIS = "seed_sally_id", "seed_max_id", "seed_chris_id"


@pytest.fixture(scope="module")
def store(engine):
    store = CallStore(engine, missed=MissedCalls(engine, region="DE", fallback_users=lambda: [MAX, CHRIS]))
    store.ensure_tables()
    return store


def fresh_number():
    return "+4930%07d" % (uuid.uuid4().int % 10**7)


def call(number, answered, direction="Inbound", owner=SALLY, started=None, name=None, **kw):
    started = started or datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=60)
    return CallRecord(call_id=str(uuid.uuid4()), linkedid=uuid.uuid4().hex[:20], uniqueid="1.1",
                      direction=direction, number=number, started_at=started,
                      ended_at=started + timedelta(seconds=30), assigned_user_id=owner,
                      parent_module="Contacts" if name else None, parent_id="c-" + number[-6:] if name else None,
                      parent_name=name, dial_status="ANSWER" if answered else "NOANSWER",
                      talk_seconds=12 if answered else None, **kw)


def entries(engine, number, **where):
    key = number_key(number, "DE")
    extra = "".join(" AND `%s` <=> :%s" % (k, k) for k in where)
    return rows(engine, "SELECT m.*, a.name AS alert_name, a.description AS alert_description, a.is_read, "
                        "a.assigned_user_id AS alert_user, a.url_redirect, a.deleted AS alert_deleted "
                        "FROM crmagi_missed m LEFT JOIN alerts a ON a.id = m.alert_id "
                        "WHERE m.number_key = :k" + extra + " ORDER BY m.first_at", k=key, **where)


def test_a_missed_call_alerts_its_owner_and_counts_attempts(store, engine):
    number = fresh_number()
    store.finish(call(number, False, name="Ann O'Neil <b>"))
    [entry] = entries(engine, number)
    assert (entry["user_id"], entry["attempts"], entry["open"], entry["alert_user"], entry["is_read"]) == (
        SALLY, 1, 1, SALLY, 0)
    # Stored HTML-encoded, as SuiteCRM's beans store text: its bell prints the value as stored.
    assert entry["alert_name"] == "Missed call: Ann O&#039;Neil &lt;b&gt; (%s)" % number
    assert entry["url_redirect"] == "index.php?module=Contacts&action=DetailView&record=c-" + number[-6:]
    assert entry["alert_description"].startswith("Attempts: 1.")
    store.finish(call(number, False, name="Ann O'Neil <b>"))
    [entry] = entries(engine, number)
    assert (entry["attempts"], entry["is_read"]) == (2, 0)
    assert entry["alert_description"].startswith("Attempts: 2.")
    assert len(rows(engine, "SELECT id FROM alerts WHERE assigned_user_id = :u AND name LIKE :n",
                    u=SALLY, n="%" + number + "%")) == 1


def test_the_same_finish_twice_counts_one_attempt(store, engine):
    number = fresh_number()
    rec = call(number, False)
    store.finish(rec)
    store.finish(rec)           # a spool replay of a write that did complete
    assert [e["attempts"] for e in entries(engine, number)] == [1]


def test_callers_without_owner_go_to_the_fallback_users(store, engine):
    number = fresh_number()
    store.finish(call(number, False, owner=None))
    assert sorted(e["user_id"] for e in entries(engine, number)) == [CHRIS, MAX]


def test_a_connected_call_closes_every_entry_of_the_number(store, engine):
    number = fresh_number()
    store.finish(call(number, False, owner=None))
    store.finish(call(number, False, owner=SALLY))
    assert len(entries(engine, number, open=1)) == 3
    # Outbound, dialled in another form of the same number.
    store.finish(call("0" + number[3:], True, direction="Outbound", owner=CHRIS))
    closed = entries(engine, number)
    assert [(e["open"], e["is_read"]) for e in closed] == [(None, 1)] * 3
    # The next miss opens a new entry, with a new alert.
    store.finish(call(number, False, owner=SALLY))
    [again] = entries(engine, number, open=1)
    assert (again["attempts"], again["is_read"]) == (1, 0)


def test_a_miss_after_the_connected_call_ended_stays_open(store, engine):
    number = fresh_number()
    early = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    store.finish(call(number, False, started=early + timedelta(minutes=30)))
    store.finish(call(number, True, started=early))        # ended before the miss: written late
    assert [e["open"] for e in entries(engine, number)] == [1]


def test_missed_outbound_and_withheld_calls_open_nothing(store, engine):
    number = fresh_number()
    store.finish(call(number, False, direction="Outbound"))
    store.finish(call("anonymous", False))
    assert entries(engine, number) == []
    assert rows(engine, "SELECT id FROM crmagi_missed WHERE number_key = ''") == []


def test_concurrent_misses_of_one_number_keep_one_entry(store, engine):
    number = fresh_number()
    jobs = [gevent.spawn(store.finish, call(number, False)) for _ in range(4)]
    gevent.joinall(jobs, raise_error=True)
    [entry] = entries(engine, number)
    assert entry["attempts"] == 4


def test_open_for_lists_a_users_open_entries_newest_first(store, engine):
    missed = store.missed
    older, newer = fresh_number(), fresh_number()
    start = datetime.now(timezone.utc).replace(microsecond=0)
    store.finish(call(older, False, owner=CHRIS, started=start - timedelta(minutes=5)))
    store.finish(call(newer, False, owner=CHRIS, started=start - timedelta(minutes=1), name="Bo Li"))
    listed = missed.open_for([CHRIS, "nobody"])
    numbers = [e.number for e in listed[CHRIS]]
    assert numbers.index(newer) < numbers.index(older)
    assert listed["nobody"] == []
    bo = listed[CHRIS][numbers.index(newer)]
    assert (bo.name, bo.module, bo.attempts, bo.last_at.tzinfo) == ("Bo Li", "Contacts", 1, timezone.utc)


def test_the_finish_of_a_started_call_is_two_round_trips_with_its_missed_entries(store, engine, monkeypatch):
    """The entries of the caller's number are read and locked in the same packet as the call's
    row (they do not depend on it): the read, then the writes and the COMMIT."""
    from test_sqlbatch import packets

    number = fresh_number()
    store.finish(call(number, False))
    for answered in (True, False):
        rec = call(number, answered)
        store.start(rec)
        sent = packets(engine, monkeypatch)
        assert store.finish(rec) is True
        assert len(sent) == 2 and "crmagi_missed" in sent[0] and sent[1].endswith("COMMIT;\nEND"), sent
        monkeypatch.undo()
    [closed, again] = sorted(entries(engine, number), key=lambda entry: entry["open"] is not None)
    assert (closed["open"], closed["attempts"], again["open"], again["attempts"]) == (None, 1, 1, 1)
