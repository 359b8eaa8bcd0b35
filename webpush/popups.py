"""Which popup is on which desk: the popup lifecycle per user (business rules, no I/O).

A popup belongs to (call, user).  It is shown in the one tab the user works in
(``Hub.active``) and follows the user when they switch tabs.  It opens on ring,
closes when the call is answered elsewhere or the phone stops ringing, moves to
the new user on transfer, and says "ended" at hangup.  A user with no CRM tab
open gets it in a tab opened within ``pending_seconds`` of the ring, not later.

Everything here runs in one greenlet (webpush/service.py), so no locks.
"""
import dataclasses
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Set

from crmlocale.catalogues import phrase

from . import messages
from .hub import user_room

log = logging.getLogger("crmagi.webpush")
RINGING, ANSWERED = "ringing", "answered"
# Reasons a phone stops ringing while the caller is gone: the popup stays, saying so.
CALLER_GONE = ("cancelled", "hangup")


@dataclass
class Popup:
    info: object                          # CallInfo
    user: object                          # crmsync.models.User
    created: float
    rendered: object = None               # content.Rendered, once the renderer delivered it
    generation: int = 0                   # renders run side by side: only the newest asked counts
    legs: Set[str] = field(default_factory=set)
    state: str = RINGING
    state_text: object = ""               # a str or a catalogues.Phrase: in the language of the tab shown
    tab: Optional[object] = None          # the Tab showing it
    shown: bool = False                   # was ever on a screen (then it may move after pending)


class PopupBook:
    def __init__(self, hub, request_render: Callable, pending_seconds=40.0, ttl=4 * 3600.0, clock=time.monotonic):
        self.hub = hub
        # (CallInfo, User, generation) -> None; the HTML comes back later through rendered(): the CRM
        # reads behind it must not hold up the events of other calls.
        self.request_render = request_render
        self.pending_seconds = pending_seconds
        self.ttl = ttl
        self.clock = clock
        self.by_user = {}                 # user id -> OrderedDict(call id -> Popup)
        self.by_call = {}                 # call id -> {user ids}: hangups don't scan every user
        # Several boxes (webpush/boxes.py): another box may hold the user's better tab.
        self.outranked = lambda user_id, tab: False
        self.on_shown = lambda popup: None
        self.stats = {"popups": 0, "delivered": 0}

    # -- call events ---------------------------------------------------------
    def ring(self, info, user, leg_id=""):
        popups = self.by_user.setdefault(user.id, OrderedDict())
        popup = popups.get(info.call_id)
        if popup is not None:
            popup.legs.add(leg_id)
            return popup
        popup = Popup(info, user, self.clock(), legs={leg_id})
        popups[info.call_id] = popup
        self.by_call.setdefault(info.call_id, set()).add(user.id)
        self.stats["popups"] += 1
        self._render(popup)
        return popup

    def _render(self, popup):
        popup.generation += 1
        self.request_render(popup.info, popup.user, popup.generation)

    def rendered(self, call_id, user_id, rendered, generation=None):
        popup = self.get(user_id, call_id)
        if popup is None or (generation is not None and generation != popup.generation):
            return                            # gone, or an older render finishing late
        popup.rendered = rendered
        if popup.tab is not None:
            self._show(popup, popup.tab)      # a refreshed popup replaces the one on screen
        else:
            self.place(user_id)

    def refresh(self, call_id, info):
        """The lookup of the call arrived after its popups were made: render them again."""
        for popup in self._popups_of(call_id):
            popup.info = dataclasses.replace(info, extension=popup.info.extension, queue=popup.info.queue)
            self._render(popup)

    def stop_ringing(self, call_id, user_id, leg_id, reason):
        popup = self.get(user_id, call_id)
        if popup is None or popup.state != RINGING:
            return
        popup.legs.discard(leg_id)
        if popup.legs:                    # another device of the same user still rings
            return
        if reason in CALLER_GONE:
            self._set_state(popup, "ended", phrase("Missed: the caller hung up"))
            self._forget(popup, close=False)
        else:
            text = phrase("Answered by someone else") if reason == "answered_elsewhere" else phrase("Stopped ringing")
            self._set_state(popup, "answered_elsewhere" if reason == "answered_elsewhere" else "stopped", text)
            self._forget(popup, close=True)

    def answered(self, call_id, user_id):
        popup = self.get(user_id, call_id)
        if popup is not None:
            popup.legs.clear()
            if popup.state != ANSWERED:       # "Transferred to you" stays: the new desk's answer is no news
                self._set_state(popup, ANSWERED, phrase("In call"))

    def transferred(self, call_id, from_user_id, to_user):
        """The responsible user changes: the old desk's popup closes, the new one's opens."""
        info = None
        old = self.get(from_user_id, call_id) if from_user_id else None
        if old is not None:
            info = old.info
            name = to_user.full_name if to_user else phrase("another phone")
            self._set_state(old, "transferred", phrase("Transferred to %s", name))
            self._forget(old, close=True)
        info = info or self._any_info(call_id)
        if to_user is not None and info is not None:
            popup = self.ring(info, to_user, "transfer")
            popup.legs.clear()
            self._set_state(popup, ANSWERED, phrase("Transferred to you"))

    def ended(self, call_id):
        for popup in self._popups_of(call_id):
            self._set_state(popup, "ended", phrase("Call ended"))
            self._forget(popup, close=False)

    # -- tab events ----------------------------------------------------------
    def tab_joined(self, tab):
        self.place(tab.user_id)

    def tab_changed(self, tab):
        self.place(tab.user_id)

    def tab_left(self, tab):
        for popup in self.by_user.get(tab.user_id, {}).values():
            if popup.tab is tab:
                popup.tab = None
        self.place(tab.user_id)

    def dismiss(self, user_id, call_id):
        popup = self.get(user_id, call_id)
        if popup is not None:
            self._forget(popup, close=True)

    def holds(self, user_id, call_id):
        return self.get(user_id, call_id) is not None

    def sweep(self):
        """Forget popups never shown within pending_seconds, and any older than ttl."""
        now = self.clock()
        for popups in list(self.by_user.values()):
            for popup in list(popups.values()):
                stale = not popup.shown and now - popup.created > self.pending_seconds
                if stale or now - popup.created > self.ttl:
                    self._forget(popup, close=True)

    # -- placement -----------------------------------------------------------
    def place(self, user_id):
        """Show every open popup of the user in the tab they work in, and nowhere else."""
        popups = self.by_user.get(user_id)
        if not popups:
            return
        target = self.hub.active(user_room(user_id))
        if target is not None and self.outranked(user_id, target):
            target = None                 # the user works in a tab held by another box
        now = self.clock()
        for popup in list(popups.values()):
            if popup.rendered is None or (popup.tab is target and target is not None):
                continue
            if not popup.shown and now - popup.created > self.pending_seconds:
                continue                  # too late for a tab opened now
            if popup.tab is not None:
                popup.tab.send(messages.encode(messages.close(popup.info.call_id)))
                popup.tab = None
            if target is not None:
                self._show(popup, target)

    def _show(self, popup, tab):
        rendered = popup.rendered
        tab.send(messages.encode(messages.popup(popup.info.call_id, rendered.html, rendered.title, rendered.notify)))
        if popup.state != RINGING:
            tab.send(messages.encode(messages.update(popup.info.call_id, popup.state, tab.say(popup.state_text))))
        popup.tab, popup.shown = tab, True
        self.stats["delivered"] += 1
        self.on_shown(popup)

    def mark_shown(self, call_id, user_id):
        """Another box showed it: here too it may now move to a tab after pending_seconds."""
        popup = self.get(user_id, call_id)
        if popup is not None:
            popup.shown = True

    def _set_state(self, popup, state, text):
        popup.state, popup.state_text = state, text
        if popup.tab is not None:
            popup.tab.send(messages.encode(messages.update(popup.info.call_id, state, popup.tab.say(text))))

    def _forget(self, popup, close):
        if close and popup.tab is not None:
            popup.tab.send(messages.encode(messages.close(popup.info.call_id)))
        popups = self.by_user.get(popup.user.id, {})
        call_id, user_id = popup.info.call_id, popup.user.id
        if popups.get(call_id) is popup:
            del popups[call_id]
            users = self.by_call.get(call_id, set())
            users.discard(user_id)
            if not users:
                self.by_call.pop(call_id, None)
        if not popups:
            self.by_user.pop(user_id, None)

    def get(self, user_id, call_id):
        return self.by_user.get(user_id, {}).get(call_id)

    def _popups_of(self, call_id):
        return [self.by_user[user_id][call_id] for user_id in sorted(self.by_call.get(call_id, ()))]

    def _any_info(self, call_id):
        found = self._popups_of(call_id)
        return found[0].info if found else None
