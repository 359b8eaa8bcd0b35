"""Click-to-call: a click in a SuiteCRM page -> AMI Originate -> progress back to that page.

The page sends ``{"type": "dial", "number", "module", "record", "ref"}`` over the popup
websocket (webpush/messages.py).  Within a second it hears ``accepted`` or ``refused`` with a
reason, then the progress agi/ami/originate_progress.py reads from AMI.  The rules
(agi/ami/originate.py): only the clicking user's own phone is rung first; the number is digits
matching ``[ami] originate_pattern``; a user starts at most ``originate_per_minute`` calls a
minute and one at a time; the record is a hint, linked only when the CRM says it exists
and carries that number (otherwise the Call is linked by the number, like any outbound call).
"""
import collections
import logging
import time
import uuid

import gevent

from crmlocale.catalogues import N_, phrase
from webpush import messages

from agi.ami import clickmark, originate
from agi.errors import AmiError
from agi.ami.originate_progress import Watch

log = logging.getLogger("crmagi.click2call")
MARK_GRACE = 120          # seconds the mark outlives the ringing: the outgoing AGI runs after the answer
MAX_WATCHES = 1000        # calls being followed at once; a lost Hangup cannot grow it past this
WATCH_TTL = 4 * 3600.0


def _refusal(error, exten, context):
    """Asterisk's refusal of an Originate, with what the admin can do about it."""
    lowered = error.lower()
    if "denied" in lowered:
        return originate.Refused(N_("Asterisk refused the call: %s (manager.conf needs write = originate)"), error)
    if "extension does not exist" in lowered:
        return originate.Refused(N_("Asterisk refused the call: %s (%s has no route in context %s: "
                                 "[ami] originate_context)"), error, exten, context)
    return originate.Refused(N_("Asterisk refused the call: %s"), error)


class _Followed:
    """A click-to-call being followed, and the tab that asked for it."""

    def __init__(self, watch, tab, ref, user_id, started):
        self.watch, self.tab, self.ref, self.user_id, self.started = watch, tab, ref, user_id, started
        self.announced = False       # "accepted" was sent; progress before it waits in ``held``
        self.held = []


class ClickToCall:
    def __init__(self, ami_settings, client, model, directory, secret, internal_max_digits=5,
                 clock=time.monotonic, wall=time.time):
        self.settings = ami_settings
        self.client, self.model, self.directory = client, model, directory
        self.secret = secret
        self.internal_max_digits = internal_max_digits
        self.clock, self.wall = clock, wall
        self.recent = collections.defaultdict(collections.deque)     # user id -> click times
        self.watches = {}                   # uniqueid -> (Watch, tab, ref, user id, started)
        self.by_action = {}                 # ActionID -> uniqueid
        self.stats = {"requested": 0, "refused": 0, "originated": 0}

    # -- the page's request ------------------------------------------------
    def request(self, tab, message):
        """Called from the tab's websocket greenlet: answers in its own greenlet."""
        gevent.spawn(self._request, tab, message.get("ref") or "", message)

    def _request(self, tab, ref, message):
        self.stats["requested"] += 1
        try:
            self._place(tab, ref, message)
        except originate.Refused as exc:
            self.stats["refused"] += 1
            self._send(tab, ref, "refused", "refused", exc.text)
        except Exception as exc:       # noqa: BLE001 - the page must hear something
            log.exception("click-to-call for user %s failed", tab.user_id)
            self.stats["refused"] += 1
            self._send(tab, ref, "refused", "error", phrase("click-to-call failed: %s", exc))

    def _place(self, tab, ref, message):
        settings = self.settings
        if not self.client.connected.is_set():
            raise originate.Refused(N_("Asterisk is not connected (AMI): try again in a moment"))
        number = originate.dial_number(message.get("number"), settings.originate_pattern)
        user = self._user(tab.user_id)
        self._admit(user.id)
        logged = self._agents()
        target = originate.first_leg(user.extension, settings.originate_channel, logged, settings.agent_context)
        context, exten = originate.destination(number, settings.originate_context, logged, settings.agent_context)
        module, record_id, name = self._record(message.get("module"), message.get("record"), number)
        uniqueid = "c2c-" + uuid.uuid4().hex
        mark = clickmark.Mark(user.id, user.extension, number, module, record_id, name[:80],
                              int(self.wall()) + settings.originate_timeout + MARK_GRACE)
        headers = originate.originate_headers(
            target, context, exten, originate.caller_id(name, number, user.extension), settings.originate_timeout,
            uniqueid, [(clickmark.VARIABLE, clickmark.mint(self.secret, mark))])
        watch = Watch(self.client.new_action_id(), uniqueid, number, target.phone)
        self._originate(self._watch(watch, tab, ref, user.id), headers, exten, context)
        log.info("click-to-call: user %s (%s) -> %s, record %s:%s, channel %s", user.user_name, target.phone,
                 number, module or "-", record_id or "-", uniqueid)

    def _originate(self, followed, headers, exten, context):
        watch = followed.watch
        try:
            self.client.action("Originate", headers, action_id=watch.action_id)
        except AmiError as exc:
            self._forget(watch.uniqueid)
            raise _refusal(str(exc), exten, context) from None
        self.stats["originated"] += 1
        self._announce(followed, phrase("calling your phone %s…", watch.phone))

    def _announce(self, followed, text):
        """"accepted", then what happened meanwhile: the AMI reader may have read the first
        events in the same buffer as the response, before this greenlet ran again."""
        uniqueid = followed.watch.uniqueid
        self._send(followed.tab, followed.ref, "accepted", "", text, call=uniqueid)
        followed.announced = True
        for progress in followed.held:
            self._send(followed.tab, followed.ref, progress.state, progress.reason, progress.text, call=uniqueid)
        followed.held = []
        if followed.watch.done:
            self._forget(uniqueid)

    def _user(self, user_id):
        user = self.directory.user(user_id)
        if user is None:
            raise originate.Refused(N_("you are not an active CRM user"))
        if not user.extension:
            raise originate.Refused(N_("your CRM user has no extension: ask an administrator to set it"))
        return user

    def _admit(self, user_id):
        """The rate limit, and one call being set up per user at a time."""
        now = self.clock()
        times = self.recent[user_id]
        while times and now - times[0] > 60:
            times.popleft()
        if len(times) >= self.settings.originate_per_minute:
            raise originate.Refused(N_("too many calls: wait %s s"), int(61 - (now - times[0])))
        if any(f.user_id == user_id and f.watch.state in ("accepted", "ringing") for f in self.watches.values()):
            raise originate.Refused(N_("your phone is already being rung for another call"))
        times.append(now)

    def _agents(self):
        """agent id -> the phone it is logged in from, as the call model knows now."""
        return {agent: phone for agent, (_, phone) in self.model.agents.logged.items() if phone}

    def _record(self, module, record_id, number):
        """(module, id, name) of the clicked record when the CRM confirms it carries the number;
        otherwise ('', '', the name of what the number matches) for the caller ID alone."""
        try:
            if isinstance(module, str) and isinstance(record_id, str) and module and record_id:
                caller = self.directory.record_with_number(module[:100], record_id[:36], number)
                if caller is not None:
                    return caller.module, caller.record_id, caller.name
                log.info("click-to-call: %s %s does not carry %s: linked by the number instead",
                         module[:100], record_id[:36], number)
            if len(number.lstrip("+")) <= self.internal_max_digits:
                colleague = self.directory.user_by_extension(number)
                return "", "", colleague.full_name if colleague else ""
            result = self.directory.lookup(number)
            return "", "", result.caller.name if result.caller else ""
        except Exception as exc:       # noqa: BLE001 - a CRM that is down costs the link, not the call
            log.warning("click-to-call: cannot check %s in the CRM (%s): the call goes on unlinked", number, exc)
            return "", "", ""

    # -- progress ------------------------------------------------------------
    def _watch(self, watch, tab, ref, user_id):
        now = self.clock()
        for uid in [u for u, item in self.watches.items() if now - item.started > WATCH_TTL]:
            self._forget(uid)
        if len(self.watches) >= MAX_WATCHES:
            raise originate.Refused(N_("too many calls being set up: try again in a moment"))
        followed = self.watches[watch.uniqueid] = _Followed(watch, tab, ref, user_id, now)
        self.by_action[watch.action_id] = watch.uniqueid
        return followed

    def _forget(self, uniqueid):
        item = self.watches.pop(uniqueid, None)
        if item is not None:
            self.by_action.pop(item.watch.action_id, None)

    def on_event(self, message):
        """Every AMI event (from the AMI reader: dictionary lookups only, never a wait)."""
        uid = self.by_action.get(message.get("ActionID")) if message.event == "OriginateResponse" else None
        uid = uid or message.get("Uniqueid")
        item = self.watches.get(uid) or self.watches.get(message.get("DestUniqueid"))
        if item is None:
            return
        watch = item.watch
        progress = watch.feed(message)
        if progress is not None and not item.announced:
            item.held.append(progress)
        elif progress is not None:
            self._send(item.tab, item.ref, progress.state, progress.reason, progress.text, call=watch.uniqueid)
        if watch.done and item.announced:
            self._forget(watch.uniqueid)

    @staticmethod
    def _send(tab, ref, state, reason, text, call=""):
        """``text``: a str or a catalogues.Phrase, sent in the language of the tab's user."""
        tab.send(messages.encode(messages.dial_status(ref, state, reason, tab.say(text), call)))
