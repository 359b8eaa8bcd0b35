"""The popup lifecycle per user (webpush/popups.py) with in-memory tabs: pure rules, no sockets."""
import json

import pytest

from crmsync.models import User
from webpush.callinfo import CallInfo
from webpush.content import Rendered
from webpush.hub import Hub, Tab, user_room
from webpush.popups import PopupBook

ANN = User("u-ann", "ann", "Ann Agent", "101")
BOB = User("u-bob", "bob", "Bob Agent", "102")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Screen:
    """A tab's transport: records what the browser would have been sent."""

    def __init__(self):
        self.sent = []

    def send(self, text):
        self.sent.append(json.loads(text))

    def close(self):
        pass

    def shown(self):
        """Call ids on this screen now, replaying popup/close messages."""
        calls = []
        for message in self.sent:
            if message["type"] == "popup" and message["call"] not in calls:
                calls.append(message["call"])
            elif message["type"] == "close" and message["call"] in calls:
                calls.remove(message["call"])
        return calls

    def states(self, call):
        return [m["state"] for m in self.sent if m["type"] == "update" and m["call"] == call]


class Rig:
    def __init__(self):
        self.clock = Clock()
        self.hub = Hub()
        self.book = PopupBook(self.hub, self.render, pending_seconds=40, clock=self.clock)

    def render(self, info, user, generation):
        # Synchronous here; the service renders beside its event loop.
        self.book.rendered(info.call_id, user.id, Rendered("<section>%s</section>" % info.number, "Call", "n"),
                           generation)

    def tab(self, user, focused=True, visible=True):
        screen = Screen()
        tab = Tab(screen, user.id, visible=visible, focused=focused, now=self.clock())
        tab.send = lambda text, screen=screen: screen.send(text)     # no greenlet needed here
        self.hub.join(tab, user_room(user.id))
        self.book.tab_joined(tab)
        return tab, screen


def call(n=1):
    return CallInfo(call_id="call-%d" % n, linkedid="L%d" % n, number="+4930123400%d" % n)


@pytest.fixture
def rig():
    return Rig()


def test_popup_goes_to_the_ringing_users_tab_only(rig):
    _, ann = rig.tab(ANN)
    _, bob = rig.tab(BOB)
    rig.book.ring(call(), ANN, "leg1")
    assert ann.shown() == ["call-1"]
    assert bob.sent == []


def test_two_tabs_one_popup_in_the_focused_one_and_it_follows_focus(rig):
    tab_a, screen_a = rig.tab(ANN, focused=False, visible=False)
    rig.clock.now += 1
    tab_b, screen_b = rig.tab(ANN, focused=True)
    rig.book.ring(call(), ANN, "leg1")
    assert screen_b.shown() == ["call-1"] and screen_a.shown() == []
    rig.clock.now += 1
    tab_b.set_state(False, False, rig.clock())
    tab_a.set_state(True, True, rig.clock())
    rig.book.tab_changed(tab_a)
    assert screen_a.shown() == ["call-1"] and screen_b.shown() == []


def test_tab_opened_within_pending_seconds_gets_it_later_not(rig):
    rig.book.ring(call(1), ANN, "leg1")
    rig.book.ring(call(2), BOB, "leg1")
    rig.clock.now += 10
    _, ann = rig.tab(ANN)
    assert ann.shown() == ["call-1"]
    rig.clock.now += 31
    _, bob = rig.tab(BOB)
    assert bob.shown() == []


def test_a_shown_popup_still_moves_after_pending_seconds(rig):
    _, first = rig.tab(ANN)
    rig.book.ring(call(), ANN, "leg1")
    rig.clock.now += 100
    _, second = rig.tab(ANN)
    assert second.shown() == ["call-1"] and first.shown() == []


def test_answered_elsewhere_closes_the_losers_popup_and_keeps_the_winners(rig):
    _, ann = rig.tab(ANN)
    _, bob = rig.tab(BOB)
    rig.book.ring(call(), ANN, "leg-a")
    rig.book.ring(call(), BOB, "leg-b")
    rig.book.answered("call-1", ANN.id)
    rig.book.stop_ringing("call-1", BOB.id, "leg-b", "answered_elsewhere")
    assert ann.shown() == ["call-1"] and ann.states("call-1") == ["answered"]
    assert bob.shown() == [] and bob.states("call-1") == ["answered_elsewhere"]


def test_second_device_of_the_same_user_keeps_the_popup_until_both_stop(rig):
    _, ann = rig.tab(ANN)
    rig.book.ring(call(), ANN, "desk")
    rig.book.ring(call(), ANN, "mobile")
    rig.book.stop_ringing("call-1", ANN.id, "desk", "no_answer")
    assert ann.shown() == ["call-1"]
    rig.book.stop_ringing("call-1", ANN.id, "mobile", "no_answer")
    assert ann.shown() == []


def test_transfer_moves_the_popup_to_the_new_user(rig):
    _, ann = rig.tab(ANN)
    _, bob = rig.tab(BOB)
    rig.book.ring(call(), ANN, "leg-a")
    rig.book.answered("call-1", ANN.id)
    rig.book.transferred("call-1", ANN.id, BOB)
    assert ann.shown() == [] and "transferred" in ann.states("call-1")
    assert bob.shown() == ["call-1"] and bob.states("call-1") == ["answered"]


def test_the_new_desks_popup_says_transferred_even_when_its_answer_comes_before_the_render():
    """A render that reads the CRM (the user's access to the record) may finish after the new
    desk's answer: the popup still says it was transferred."""
    hub, later = Hub(), []
    book = PopupBook(hub, lambda info, user, generation: later.append((info, user, generation)), pending_seconds=40)
    screen = Screen()
    tab = Tab(screen, BOB.id, focused=True)
    tab.send = screen.send
    hub.join(tab, user_room(BOB.id))
    book.ring(call(), ANN, "leg-a")
    book.answered("call-1", ANN.id)
    book.transferred("call-1", ANN.id, BOB)
    book.answered("call-1", BOB.id)                     # before BOB's render is back
    for info, user, generation in later:
        book.rendered(info.call_id, user.id, Rendered("<section></section>", "t", "n"), generation)
    updates = [(m["state"], m["text"]) for m in screen.sent if m["type"] == "update"]
    assert updates == [("answered", "Transferred to you")]


def test_hangup_ends_the_popup_and_a_new_tab_does_not_get_it(rig):
    _, ann = rig.tab(ANN)
    rig.book.ring(call(), ANN, "leg-a")
    rig.book.ended("call-1")
    assert ann.states("call-1") == ["ended"] and ann.shown() == ["call-1"]
    _, again = rig.tab(ANN)
    assert again.shown() == []
    assert rig.book.by_user == {} and rig.book.by_call == {}


def test_caller_hanging_up_while_ringing_leaves_a_missed_note(rig):
    _, ann = rig.tab(ANN)
    rig.book.ring(call(), ANN, "leg-a")
    rig.book.stop_ringing("call-1", ANN.id, "leg-a", "cancelled")
    assert ann.shown() == ["call-1"] and ann.states("call-1") == ["ended"]


def test_dismiss_and_sweep_forget_popups(rig):
    _, ann = rig.tab(ANN)
    rig.book.ring(call(1), ANN, "leg-a")
    rig.book.dismiss(ANN.id, "call-1")
    assert ann.shown() == []
    rig.book.ring(call(2), BOB, "leg-b")         # Bob has no tab: never shown
    rig.clock.now += 41
    rig.book.sweep()
    assert rig.book.by_user == {} and rig.book.by_call == {}


def test_tab_closing_hands_the_popup_to_the_users_other_tab(rig):
    tab_a, screen_a = rig.tab(ANN, focused=False)
    rig.clock.now += 1
    tab_b, screen_b = rig.tab(ANN, focused=True)
    rig.book.ring(call(), ANN, "leg-a")
    rig.hub.leave(tab_b)
    rig.book.tab_left(tab_b)
    assert screen_a.shown() == ["call-1"]


def test_render_arriving_after_the_call_stopped_shows_nothing():
    hub, later = Hub(), []
    book = PopupBook(hub, lambda info, user, generation: later.append((info, user)), pending_seconds=40)
    screen = Screen()
    tab = Tab(screen, ANN.id, focused=True)
    tab.send = screen.send
    hub.join(tab, user_room(ANN.id))
    book.ring(call(), ANN, "leg-a")
    book.stop_ringing("call-1", ANN.id, "leg-a", "answered_elsewhere")
    info, user = later[0]
    book.rendered(info.call_id, user.id, Rendered("<section></section>", "t", "n"))
    assert screen.shown() == []


def test_an_older_render_finishing_last_does_not_replace_the_newer():
    hub, asked = Hub(), []
    book = PopupBook(hub, lambda info, user, generation: asked.append(generation), pending_seconds=40)
    screen = Screen()
    tab = Tab(screen, ANN.id, focused=True)
    tab.send = screen.send
    hub.join(tab, user_room(ANN.id))
    book.ring(call(), ANN, "leg-a")                # render 1: no lookup yet
    book.refresh("call-1", call())                 # render 2: the AGI's lookup arrived
    book.rendered("call-1", ANN.id, Rendered("<section>known</section>", "t", "n"), asked[1])
    book.rendered("call-1", ANN.id, Rendered("<section>unknown</section>", "t", "n"), asked[0])
    assert asked == [1, 2]
    assert [m["html"] for m in screen.sent if m["type"] == "popup"] == ["<section>known</section>"]
