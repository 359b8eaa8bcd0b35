"""The missed-calls list beside the popup: each connected user's open entries, kept current.

The entries live in the CRM's database (crmsync/missed.py, written with the finish of each
call, on whichever box), so every box reads them there: when a call ends anywhere (the
popup events of every box reach every box) the list of this box's users is read again, a
moment later so the finish has been written, and also every ``every`` seconds (a finish
that waited in the spool).  A tab gets the list when it connects and whenever it changes;
a user's tabs all show it.  The HTML is rendered here, autoescaped (templates/missed.html.j2).
"""
import logging

import gevent

from . import messages
from .hub import user_room

log = logging.getLogger("crmagi.webpush")
TEMPLATE = "missed.html.j2"
USER_PREFIX = "user:"
CHUNK = 500              # users per read: one IN list stays short


class MissedBoard:
    def __init__(self, hub, source, content, delay=2.0, every=15.0):
        self.hub = hub
        self.source = source            # open_for(user_ids) -> {user_id: [MissedEntry]}
        self.content = content          # webpush/content.py PopupContent: templates, CRM URLs
        self.delay = delay
        self.every = every
        self.sent = {}                  # user_id -> the message last sent to the user's tabs
        self._soon = None
        self._loop = None

    def start(self):
        self._loop = gevent.spawn(self._run)
        return self

    def stop(self):
        gevent.killall([g for g in (self._loop, self._soon) if g is not None])

    def _run(self):
        while True:
            gevent.sleep(self.every)
            self.refresh()

    def changed(self):
        """A call ended somewhere: read the lists again shortly (one read for many calls)."""
        if self._soon is None:
            self._soon = gevent.spawn_later(self.delay, self._refresh_soon)

    def _refresh_soon(self):
        self._soon = None
        self.refresh()

    def joined(self, tab):
        """A tab connected: its user's list, as it is now."""
        gevent.spawn(self._send_to_tab, tab)

    def _send_to_tab(self, tab):
        message = self._read([tab.user_id]).get(tab.user_id)
        if message is not None:
            self.sent[tab.user_id] = message
            tab.send(message)

    def refresh(self):
        """Send every connected user whose list changed the new one."""
        users = [room[len(USER_PREFIX):] for room in list(self.hub.rooms) if room.startswith(USER_PREFIX)]
        for user_id in [u for u in self.sent if u not in users]:
            del self.sent[user_id]      # gone from this box: forget what it was sent
        for start in range(0, len(users), CHUNK):
            for user_id, message in self._read(users[start:start + CHUNK]).items():
                if self.sent.get(user_id) != message:
                    self.sent[user_id] = message
                    self.hub.send(user_room(user_id), message)

    def _read(self, user_ids):
        """user_id -> the encoded list message; nothing when the CRM cannot tell (logged)."""
        try:
            found = self.source(user_ids)
        except Exception as exc:    # noqa: BLE001 - the list waits for the next refresh
            log.warning("missed-calls list unavailable: %s", exc)
            return {}
        return {user_id: messages.encode(messages.missed(self.render(entries, user_id), len(entries)))
                for user_id, entries in found.items()}

    def render(self, entries, user_id=None):
        """The list in the user's SuiteCRM language, date format and zone (webpush/content.py)."""
        return self.content.render_for(TEMPLATE, user_id, entries=[self._view(e, user_id) for e in entries])

    def _view(self, entry, user_id):
        """A record the user may not view (SuiteCRM's ACL) shows as its module only, as in the popup."""
        found = bool(entry.module and entry.record_id)
        known = found and self.content.may_view(user_id, entry.module, entry.record_id, about=entry.entry_id)
        return dict(entry=entry, known=known, restricted=found and not known,
                    record_url=self.content.record_url(entry.module, entry.record_id) if known else "")
