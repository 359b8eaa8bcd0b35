"""The AMI listener's pipeline on recorded Asterisk 22 streams: which live updates say that
their call's row is coming (``awaited``), so a worker that follows AMI for others waits for it."""
import pytest

from agi.ami.live import LivePipeline
from test_callmodel import load, model, recorded_clock


class Writer:
    def __init__(self):
        self.updates = []

    def submit_live(self, change):
        self.updates.append(change)
        return True


class Directory:
    def user_by_extension(self, extension):
        return None


def updates(name, await_rows, **model_settings):
    writer = Writer()
    pipeline = LivePipeline(model(**model_settings), Directory(), writer, lambda system, linkedid: "call-" + linkedid,
                            await_rows=await_rows)
    messages = load(name)
    for message, now in zip(messages, recorded_clock(messages)):
        pipeline.clock = lambda now=now: now
        pipeline.on_event(message)
    while pipeline.queue.qsize():
        update = pipeline.update_of(*pipeline.queue.get())
        if update is not None:
            writer.submit_live(update)
    return [(u.kind, u.extension, u.awaited) for u in writer.updates]


@pytest.mark.parametrize("name, expected", [
    ("01-inbound-answered", [("recording", None, True), ("answered", "101", True)]),
    ("04a-outbound-answered", [("recording", None, True), ("answered", "101", True)]),
    ("06a-blind-transfer", [("recording", None, True), ("answered", "101", True), ("transferred", "104", True),
                            ("answered", "104", True)]),
])
def test_updates_of_calls_crmagi_logs_are_awaited_with_several_workers(name, expected):
    assert [u for u in updates(name, await_rows=True) if u[0] != "attribution"] == expected
    assert all(not awaited for _, _, awaited in updates(name, await_rows=False))



def test_updates_of_a_call_that_come_together_are_one_batch_in_their_order():
    """The effects greenlet takes every event queued meanwhile: a call's answer and recording
    (one burst of AMI events) are one write; other calls' updates stay apart."""
    from crmsync.models import LiveBatch

    writer = Writer()
    pipeline = LivePipeline(model(), Directory(), writer, lambda system, linkedid: "call-" + linkedid)
    for name in ("01-inbound-answered", "06a-blind-transfer"):
        messages = load(name)
        for message, now in zip(messages, recorded_clock(messages)):
            pipeline.clock = lambda now=now: now
            pipeline.on_event(message)
    batch = [pipeline.queue.get() for _ in range(pipeline.queue.qsize())]
    pipeline._effects(batch)
    assert all(isinstance(w, LiveBatch) for w in writer.updates) and len(writer.updates) == 2
    kinds = [[u.kind for u in w.updates if u.kind != "attribution"] for w in writer.updates]
    assert kinds == [["recording", "answered"], ["recording", "answered", "transferred", "answered"]]
    assert len({w.call_id for w in writer.updates}) == 2
    assert all(u.call_id == w.call_id for w in writer.updates for u in w.updates)


class SlowLive:
    """The CRM side of live updates, slower than the AMI feed: each write takes 10 ms."""

    def __init__(self):
        self.applied = []

    def apply(self, change):
        import gevent
        gevent.sleep(0.01)
        self.applied.extend(getattr(change, "updates", (change,)))
        return True


class Store:
    def ping(self):
        return True


def test_a_backlog_past_the_queue_bound_loses_no_update_and_keeps_each_calls_order(tmp_path, monkeypatch):
    """A burst of AMI events faster than the CRM takes their updates (a busy worker, a slow
    database): past the in-memory bound they wait in the spool, in each call's order, instead
    of being dropped (before: "effects queue full: dropping", the transfer never written)."""
    import gevent
    from agi.ami import live
    from agi.ami.callmodel import Transferred
    from crmsync.spool import Spool
    from crmsync.writer import CallWriter

    monkeypatch.setattr(live, "SHELVE_BACKLOG", 50)  # past it: spooled (before: dropped past the bound)
    crm = SlowLive()
    spool = Spool(tmp_path / "spool.sqlite")
    writer = CallWriter(Store(), spool, timeout=1.0, flush_interval=0.05, live=crm).start()
    pipeline = LivePipeline(None, Directory(), writer, lambda system, linkedid: "call-" + linkedid).start()
    extensions = ("101", "102", "103")
    for extension in extensions:             # three transfers of each of 100 calls, in bursts
        for burst in range(5):
            for n in range(burst * 20, burst * 20 + 20):
                pipeline.enqueue(Transferred("L%d" % n, "100", extension, "blind"))
            gevent.sleep(0.001)
    deadline = gevent.Timeout(30)
    with deadline:
        while pipeline.pending() or len(spool):
            gevent.sleep(0.05)
    pipeline.stop()
    writer.stop()
    assert pipeline.stats.get("dropped", 0) == 0
    assert pipeline.stats["shelved"] > 0            # the spool took part: the bound was passed
    seen = {}
    for update in crm.applied:
        seen.setdefault(update.call_id, []).append(update.extension)
    assert len(seen) == 100
    assert all(order == list(extensions) for order in seen.values()), seen


def test_stopping_spools_the_updates_still_queued(tmp_path):
    """A stop (SIGTERM, a restart) lets the batch in progress end and spools the updates of the
    events still queued, for the next start to write.  Before, the effects greenlet was killed
    with its queue: at 200 calls/s the last ~700 calls of a run lost their answer."""
    import gevent
    from agi.ami.callmodel import Transferred
    from crmsync.spool import Spool
    from crmsync.writer import CallWriter

    crm = SlowLive()
    spool = Spool(tmp_path / "spool.sqlite")
    writer = CallWriter(Store(), spool, timeout=1.0, live=crm)
    pipeline = LivePipeline(None, Directory(), writer, lambda system, linkedid: "call-" + linkedid).start()
    for n in range(30):
        pipeline.enqueue(Transferred("L%d" % n, "100", "101", "blind"))
    gevent.sleep(0.005)                 # the first batch is being written
    for n in range(30):                 # these wait in the queue
        pipeline.enqueue(Transferred("L%d" % n, "100", "102", "blind"))
    pipeline.stop()
    assert pipeline.pending() == 0
    assert [u.extension for u in crm.applied] == ["101"] * 30           # the batch in progress ended
    assert sorted(op.call_id for op in spool.pending()) == sorted("call-L%d" % n for n in range(30))
    writer.flush()
    seen = {}
    for update in crm.applied:
        seen.setdefault(update.call_id, []).append(update.extension)
    assert all(order == ["101", "102"] for order in seen.values()) and len(seen) == 30


def test_a_slow_answer_to_filter_costs_neither_the_filter_nor_the_resync(monkeypatch):
    """After a reconnect under load Asterisk answers slowly.  The Filter actions wait as long as
    the lists do, and a Filter that still fails does not skip the resync of the calls in
    progress (before: "AMI resync failed: no response to Filter within 2.0s", no resync)."""
    import gevent
    from agi.ami.amiclient import AmiClient, Backoff
    from agi.ami.live import EVENT_FILTERS
    from fake_ami import FakeAmi

    from agi.ami import live

    monkeypatch.setattr(live, "RESYNC_TIMEOUT", 0.6, raising=False)     # the client's own: 0.2 s
    fake = FakeAmi().start()
    fake.delays = {"Filter": 0.3}
    pipeline = LivePipeline(model(), Directory(), Writer(), lambda system, linkedid: linkedid)
    client = AmiClient("127.0.0.1", fake.port, "crm", "crmsecret", pipeline, timeout=0.2,
                       backoff=Backoff(first=0.01, cap=0.1)).start()
    try:
        with gevent.Timeout(5):
            while not any(a.get("Action") == "CoreShowChannels" for a in fake.actions):
                gevent.sleep(0.02)
        assert [a.get("Filter") for a in fake.actions if a.get("Action") == "Filter"] == list(EVENT_FILTERS)
        fake.unanswered = {"Filter"}            # never answered: the resync still happens
        fake.delays = {}
        before = len(fake.actions)
        pipeline.on_connected(client)
        assert [a.get("Action") for a in fake.actions[before:]].count("CoreShowChannels") == 1
    finally:
        client.stop()
        fake.stop()
