"""Tier b: the AMI client against a fake Asterisk Manager that replays recordings and drops the link."""
import gevent
import pytest

from agi.ami.amiclient import AmiClient, Backoff
from agi.errors import AmiDisconnected
from fake_ami import FakeAmi, recorded_events


class Recorder:
    def __init__(self):
        self.events, self.connected = [], 0

    def on_event(self, message):
        self.events.append(message)

    def on_connected(self, client):
        self.connected += 1


def wait(predicate, timeout=5.0):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.01)


@pytest.fixture
def fake():
    server = FakeAmi(recorded_events("01-inbound-answered")).start()
    yield server
    server.stop()


def client_for(fake, handler, **kwargs):
    return AmiClient("127.0.0.1", fake.port, "crm", "crmsecret", handler, timeout=1.0,
                     backoff=Backoff(first=0.01, cap=0.1), **kwargs).start()


def test_receives_every_recorded_event_unescaped(fake):
    expected = len(fake.events)
    rec = Recorder()
    client = client_for(fake, rec)
    try:
        wait(lambda: len(rec.events) == expected)
        names = [m.get("CallerIDName") for m in rec.events if m.event == "DialBegin"]
        assert 'Anna "Annie" O\'Neil' in names
        login = fake.actions[0]
        assert (login["Action"], login["Username"], login["Events"]) == ("Login", "crm", "on")
        assert rec.connected == 1
    finally:
        client.stop()


def test_reconnects_after_restart_and_loses_nothing(fake):
    expected = len(fake.events)
    fake.drop_after = 100
    rec = Recorder()
    client = client_for(fake, rec)
    try:
        wait(lambda: len([m for m in rec.events if m.event != "Shutdown"]) == expected)
        assert fake.connections == 2 and rec.connected == 2
        assert client.stats["disconnects"] >= 1
        assert [m.event for m in rec.events].count("Shutdown") == 1
    finally:
        client.stop()


def test_refused_connects_back_off_then_connect(fake):
    fake.refuse = True
    rec = Recorder()
    client = client_for(fake, rec)
    try:
        gevent.sleep(0.3)
        assert rec.connected == 0
        fake.refuse = False
        wait(lambda: rec.connected == 1)
    finally:
        client.stop()


def test_actions_and_list_actions(fake):
    client = client_for(fake, Recorder())
    try:
        client.connected.wait(2)
        assert client.action("Ping").get("Ping") == "Pong"
        response, events = client.action("CoreShowChannels", collect=True)
        assert response.response == "Success" and events == []
    finally:
        client.stop()


def test_an_action_on_a_dead_link_fails_fast(fake):
    client = client_for(fake, Recorder())
    try:
        client.connected.wait(2)
        client._sock.close()                 # the socket dies under a waiting action
        with pytest.raises(AmiDisconnected):
            client.action("Ping", timeout=2)
    finally:
        client.stop()


def test_wrong_secret_is_retried_with_backoff_not_a_tight_loop(fake):
    fake.secret = "other"
    client = client_for(fake, Recorder())
    try:
        gevent.sleep(0.5)
        logins = [a for a in fake.actions if a.get("Action") == "Login"]
        assert 2 <= len(logins) <= 15        # backs off between attempts (cap 0.1 s here)
        assert not client.connected.is_set()
    finally:
        client.stop()


def test_backoff_is_capped_and_jittered():
    backoff = Backoff(first=0.05, cap=2.0, rng=lambda: 1.0)
    delays = [backoff.next() for _ in range(10)]
    assert delays[0] == 0.05 and max(delays) == 2.0
    backoff.reset()
    assert Backoff(first=0.05, cap=2.0, rng=lambda: 0.0).next() == 0.025


def test_a_junk_frame_is_skipped_and_the_link_stays_up(fake):
    """Found by the live junk run (tests/test_junk_traffic.py): a frame that does not start with
    a header raised out of the read loop, so the client reconnected and resynced for one bad frame."""
    expected = len(fake.events)
    fake.events = fake.events[:5] + [b"garbage without a header", b": no key"] + fake.events[5:]
    rec = Recorder()
    client = client_for(fake, rec)
    try:
        wait(lambda: len(rec.events) == expected)
        gevent.sleep(0.1)
        assert fake.connections == 1 and client.stats["disconnects"] == 0 and client.stats["junk"] == 2
    finally:
        client.stop()


def test_a_reader_with_data_always_waiting_still_lets_the_other_greenlets_run():
    """Under load Asterisk's events are always waiting in the socket, and gevent's recv then
    returns without a switch: the reader must yield after each chunk, or the AGI requests and
    the effects greenlet of this process starve behind it (their queue overflowed)."""
    import socket
    from agi.errors import AmiError

    ticks = [0]
    seen = []

    class Handler:
        def on_event(self, message):
            seen.append(ticks[0])

    def ticker():
        while True:
            ticks[0] += 1
            gevent.sleep(0)

    ours, asterisk = socket.socketpair()
    asterisk.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    frame = b"Event: Newchannel\r\nChannel: PJSIP/101-00000001\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n"
    payload = frame * (300_000 // len(frame))
    asterisk.setblocking(False)
    assert asterisk.send(payload) == len(payload)    # all of it waits in the socket already
    asterisk.close()
    client = AmiClient("127.0.0.1", 1, "crm", "secret", Handler())
    running = gevent.spawn(ticker)
    try:
        with pytest.raises(AmiError):
            client._read_loop(gevent.socket.socket(fileno=ours.detach()), b"")
    finally:
        running.kill()
    assert len(seen) == payload.count(b"\r\n\r\n")
    assert len(set(seen)) > 1, "the other greenlets never ran while the reader read %d bytes" % len(payload)


def test_an_unanswered_ping_ends_the_link_only_when_nothing_else_came(fake):
    """Under load the Ping's answer waits behind events the reader has not reached yet: a link
    that keeps delivering is alive, and a reconnect would lose the events in between (seen at
    200 calls/s: "no response to Ping within 2.0s", 2,585 calls unseen).  A silent link still ends."""
    fake.unanswered = {"Ping"}
    fake.events = [b"Event: Newchannel\r\nUniqueid: 1.%d\r\nLinkedid: 1.%d" % (n, n) for n in range(200)]
    fake.pace = 0.01                    # 2 s of events, ten pings' time
    rec = Recorder()
    client = AmiClient("127.0.0.1", fake.port, "crm", "crmsecret", rec, timeout=0.2, ping_interval=0.1,
                       backoff=Backoff(first=0.01, cap=0.1)).start()
    try:
        wait(lambda: len(rec.events) == 200)
        assert fake.connections == 1 and client.stats["disconnects"] == 0
        wait(lambda: fake.connections == 2)         # then silence: the unanswered Ping ends it
    finally:
        client.stop()
