"""Rooms and tabs (webpush/hub.py): the active tab, and a browser that stops reading."""
import gevent

from webpush.hub import OUTBOX_LIMIT, Hub, Tab, user_room


class Stuck:
    """A browser that never reads: every send blocks."""

    def __init__(self):
        self.closed = False

    def send(self, text):
        gevent.sleep(3600)

    def close(self):
        self.closed = True


class Quick:
    def __init__(self):
        self.sent = []

    def send(self, text):
        self.sent.append(text)

    def close(self):
        pass


def test_a_tab_that_stops_reading_is_closed_and_costs_others_nothing():
    hub, stuck, quick = Hub(), Stuck(), Quick()
    slow_tab, fast_tab = Tab(stuck, "u1"), Tab(quick, "u2")
    hub.join(slow_tab, user_room("u1"))
    hub.join(fast_tab, user_room("u2"))
    for n in range(OUTBOX_LIMIT + 5):
        slow_tab.send("m%d" % n)
        fast_tab.send("m%d" % n)
        gevent.sleep(0)           # events arrive over time: the quick browser keeps up
    gevent.sleep(0.05)
    assert slow_tab.closed and stuck.closed and not slow_tab.outbox
    assert len(quick.sent) == OUTBOX_LIMIT + 5 and quick.sent[0] == "m0" and quick.sent[-1] == "m%d" % (OUTBOX_LIMIT + 4)


def test_active_tab_is_focused_then_visible_then_newest():
    hub = Hub()
    hidden = Tab(Quick(), "u", visible=False, focused=False, now=5)
    visible = Tab(Quick(), "u", visible=True, focused=False, now=1)
    hub.join(hidden, "user:u")
    hub.join(visible, "user:u")
    assert hub.active("user:u") is visible
    focused = Tab(Quick(), "u", visible=True, focused=True, now=0)
    hub.join(focused, "user:u")
    assert hub.active("user:u") is focused
    hub.leave(focused)
    assert hub.active("user:u") is visible and hub.count() == 2
    hub.leave(visible)
    hub.leave(hidden)
    assert hub.rooms == {} and hub.active("user:u") is None


def test_a_tab_the_server_closes_leaves_its_rooms_at_once():
    hub, left = Hub(), []
    tab = Tab(Quick(), "u", focused=True)
    hub.join(tab, user_room("u"))
    tab.on_close = lambda: (hub.leave(tab), left.append(tab))
    tab.close()
    tab.close()
    assert hub.active(user_room("u")) is None and left == [tab]
