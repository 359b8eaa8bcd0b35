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
        pipeline.apply(*pipeline.queue.get())
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

