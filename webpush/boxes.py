"""Several crmagi boxes, one user: which box's tab shows that user's popups.

With Redis every box hears every call, and a user's tabs may be spread over boxes
(a browser's tabs reconnect to whichever box the balancer picks).  Each box says,
on the bus, how good its best tab of a user is (focused, visible, when last used);
a box shows the user's popups only when no other box has a better tab, so the
user sees one popup, in the tab they work in, whichever box holds it.  A box
that stops beating (it died) is forgotten after BOX_TIMEOUT seconds.
"""
import time
import uuid

from .hub import user_room

HEARTBEAT = 10.0
BOX_TIMEOUT = 30.0


class Boxes:
    def __init__(self, bus, hub, clock=time.monotonic, box_id=None):
        self.bus, self.hub, self.clock = bus, hub, clock
        self.box = box_id or uuid.uuid4().hex
        self.remote = {}                  # user id -> {box: rank of its best tab}
        self.heard = {}                   # box -> when it last spoke
        self.beaten = float("-inf")

    def rank(self, tab):
        """Comparable across boxes (JSON lists compare like the tuples of Tab.rank)."""
        return [bool(tab.focused and tab.visible), bool(tab.visible), tab.seen_at, self.box, tab.serial]

    def announce(self, user_id):
        """A tab of this user joined, changed or left here: tell the other boxes."""
        best = self.hub.active(user_room(user_id))
        self.bus.publish({"e": "tabs", "box": self.box, "user": user_id, "rank": self.rank(best) if best else None})

    def shown(self, popup):
        self.bus.publish({"e": "shown", "box": self.box, "call": popup.info.call_id, "user": popup.user.id})

    def heard_tabs(self, event):
        """Another box's best tab of a user; returns the user to place again (None: ours)."""
        box, user, rank = event.get("box"), event.get("user"), event.get("rank")
        if box == self.box or not isinstance(user, str):
            return None
        self.heard[box] = self.clock()
        ranks = self.remote.setdefault(user, {})
        if isinstance(rank, list) and len(rank) == 5:
            ranks[box] = rank
        else:
            ranks.pop(box, None)
        if not ranks:
            del self.remote[user]
        return user

    def heard_box(self, event):
        if event.get("box") != self.box:
            self.heard[event.get("box")] = self.clock()

    def outranked(self, user_id, tab):
        """True when a live box has a better tab of this user than ``tab``."""
        ranks = self.remote.get(user_id)
        if not ranks:
            return False
        mine, now = self.rank(tab), self.clock()
        return any(rank > mine for box, rank in ranks.items() if now - self.heard.get(box, -BOX_TIMEOUT * 2) < BOX_TIMEOUT)

    def beat(self):
        """Say we are alive; forget boxes that went silent.  Returns the users to place again."""
        now = self.clock()
        if now - self.beaten >= HEARTBEAT:
            self.beaten = now
            self.bus.publish({"e": "box", "box": self.box})
        dead = {box for box, when in self.heard.items() if now - when >= BOX_TIMEOUT}
        users = []
        for user, ranks in list(self.remote.items()):
            if dead & set(ranks):
                users.append(user)
                for box in dead:
                    ranks.pop(box, None)
                if not ranks:
                    del self.remote[user]
        for box in dead:
            del self.heard[box]
        return users
