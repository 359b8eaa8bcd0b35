"""Rooms of connected browser tabs: ``user:<id>`` and ``ext:<extension>``.

Business code addresses a room, never a socket.  A tab joins its user's room
once its token is verified.  ``active(room)`` is the tab the user is working
in (focused, else visible, else the most recent), which is where that user's
popups go: one popup per user however many CRM tabs are open.

Sending never blocks the caller: each tab has an outbox drained by a greenlet
that exists only while there is something to send, so 10,000 idle tabs cost
no greenlet beyond the one reading each socket, and a stalled browser delays
nobody else.
"""
import itertools
import logging
from collections import deque

import gevent

from crmlocale import catalogues

log = logging.getLogger("crmagi.webpush")
OUTBOX_LIMIT = 256        # messages queued for one tab before it is judged dead
SEND_TIMEOUT = 10.0


def user_room(user_id):
    return "user:" + user_id


def ext_room(extension):
    return "ext:" + extension


class Tab:
    """One browser tab's socket, as the hub sees it; ``transport`` has send(text) and close()."""

    _ids = itertools.count(1)

    def __init__(self, transport, user_id, tab_id="", visible=True, focused=False, now=0.0):
        self.transport = transport
        self.user_id = user_id
        self.tab_id = tab_id
        self.serial = next(self._ids)
        self.visible, self.focused = visible, focused
        self.seen_at = now             # last time it became focused/visible or connected
        self.outbox = deque()
        self.sender = None
        self.closed = False
        self.rooms = set()
        self.on_close = None           # set by the server: leave the hub at once, not at next read
        self.language = catalogues.language("")   # the user's catalogue, set by the server at admission

    def say(self, text):
        """A text (a str, or a catalogues.Phrase made earlier) in this tab's user's language."""
        return self.language.say(text)

    def set_state(self, visible, focused, now):
        if (focused and not self.focused) or (visible and not self.visible):
            self.seen_at = now
        self.visible, self.focused = visible, focused

    def rank(self):
        """Higher is where the user works now; ties go to the newest tab."""
        return (self.focused and self.visible, self.visible, self.seen_at, self.serial)

    def send(self, text):
        if self.closed:
            return
        if len(self.outbox) >= OUTBOX_LIMIT:
            log.warning("tab of user %s does not read its messages: closing it", self.user_id)
            self.close()
            return
        self.outbox.append(text)
        if self.sender is None:
            self.sender = gevent.spawn(self._drain)

    def _drain(self):
        try:
            while self.outbox and not self.closed:
                text = self.outbox.popleft()
                with gevent.Timeout(SEND_TIMEOUT):
                    self.transport.send(text)
        except (Exception, gevent.Timeout) as exc:
            log.info("tab of user %s: send failed (%s); closing", self.user_id, exc)
            self.close()
        finally:
            self.sender = None

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.outbox.clear()
        try:
            self.transport.close()
        except Exception:
            pass
        if self.on_close is not None:
            self.on_close()

    def __repr__(self):
        return "<Tab %s user=%s visible=%s focused=%s>" % (self.serial, self.user_id, self.visible, self.focused)


class Hub:
    def __init__(self):
        self.rooms = {}

    def join(self, tab, *rooms):
        for room in rooms:
            self.rooms.setdefault(room, set()).add(tab)
            tab.rooms.add(room)

    def leave(self, tab):
        for room in tab.rooms:
            members = self.rooms.get(room, set())
            members.discard(tab)
            if not members:
                self.rooms.pop(room, None)
        tab.rooms = set()

    def members(self, room):
        return sorted(self.rooms.get(room, ()), key=lambda tab: tab.serial)

    def active(self, room):
        tabs = [tab for tab in self.rooms.get(room, ()) if not tab.closed]
        return max(tabs, key=Tab.rank) if tabs else None

    def send(self, room, text):
        """To every tab in the room; returns how many."""
        tabs = self.members(room)
        for tab in tabs:
            tab.send(text)
        return len(tabs)

    def count(self):
        return len({tab for tabs in self.rooms.values() for tab in tabs})

    def users(self):
        """Users with at least one tab in the hub."""
        return sum(1 for room in self.rooms if room.startswith("user:"))
