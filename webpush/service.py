"""Feeds the PopupBook from the call sources and the browser tabs, in one greenlet.

Call sources (the FastAGI routes and the AMI pipeline) publish plain dict events
on a bus (webpush/bus.py: in-process, or Redis when several crmagi boxes share
the browsers); every box applies every event to its own PopupBook, so a tab
connected to any box gets its user's popups.  Events and tab actions are
applied in order by one greenlet; the CRM reads of rendering run beside it.

Who gets a popup: with AMI, the phones that actually ring (queues, agents,
hunt groups, transfers); without AMI, the record's responsible user, whom the
dialplan rings through CRM_OWNER_EXTEN.
"""
import logging
import re
import time

import gevent
from gevent.lock import BoundedSemaphore
from gevent.queue import Full, Queue

from crmlocale.catalogues import phrase

from . import callinfo, messages
from .boxes import Boxes

log = logging.getLogger("crmagi.webpush")
QUEUE_SIZE = 20000
SWEEP_EVERY = 5.0
INFO_TTL = 600.0          # seconds the AGI's lookup of a call is kept for AMI's ring events
RENDERS = 50              # CRM reads for popups at once; more wait their turn, not the event loop
EXTENSION = re.compile(r"[0-9]{2,6}")   # ASCII digits only: a transfer never dials out


def _pops_up(user):
    """A known user whose popups are on (`crmagi users set USER --popups off` turns them off)."""
    return user is not None and getattr(user, "popups", True)


class PopupService:
    def __init__(self, book, directory, bus, content, call_id_for, system_name="", ami_driven=False,
                 transfer=None, fallback_extensions=(), clock=time.monotonic, dial=None, missed=None):
        self.book = book
        self.directory = directory
        self.bus = bus
        self.content = content                   # render(CallInfo, User) -> Rendered
        self.call_id_for = call_id_for
        self.system_name = system_name
        self.ami_driven = ami_driven
        self.transfer_call = transfer            # (linkedid, extension) -> (ok, text), or None
        self.dial_call = dial                    # click-to-call: (tab, message) -> answers the tab itself
        self.fallback_extensions = tuple(fallback_extensions)
        self.on_seen = lambda user_id: None     # a tab of this user connected (`crmagi users` last seen)
        self.missed = missed                      # webpush/missedlist.py MissedBoard, or None
        self.clock = clock
        self.queue = Queue(QUEUE_SIZE)
        self.render_slots = BoundedSemaphore(RENDERS)
        self.infos = {}                           # linkedid -> (CallInfo, when)
        self._greenlets = []
        self._renders = set()
        self.boxes = None
        if book is not None:
            book.request_render = self._request_render
            if getattr(bus, "shared", False):        # several boxes share the browsers
                self.boxes = Boxes(bus, book.hub, clock)
                book.outranked, book.on_shown = self.boxes.outranked, self.boxes.shown

    # -- lifecycle -------------------------------------------------------------
    def start(self):
        self.bus.subscribe(self.post_event)
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._sweep_loop)]
        if self.missed is not None:
            self.missed.start()
        return self

    def stop(self):
        self.bus.close()
        if self.missed is not None:
            self.missed.stop()
        gevent.killall(self._greenlets + list(self._renders))

    def _run(self):
        for func, args in self.queue:
            try:
                func(*args)
            except Exception:
                log.exception("popup step %s failed", getattr(func, "__name__", func))

    def _post(self, func, *args):
        try:
            self.queue.put_nowait((func, args))
        except Full:
            log.error("popup queue full (%d): dropping %s", QUEUE_SIZE, func.__name__)

    def _sweep_loop(self):
        while True:
            gevent.sleep(SWEEP_EVERY)
            self._post(self._sweep)

    def _sweep(self):
        self.book.sweep()
        if self.boxes is not None:
            for user_id in self.boxes.beat():
                self.book.place(user_id)
        now = self.clock()
        for linkedid in [k for k, (_, when) in self.infos.items() if now - when > INFO_TTL]:
            del self.infos[linkedid]

    # -- call sources: publish (never block the AGI or AMI greenlets) ----------
    def on_agi(self, kind, record, result, rings=False):
        """routes.CallFlow.notify: "ringing" after the inbound lookup, "ended" at hangup.
        ``rings``: the call's source reports which phones ring (a plugin PBX), as AMI does."""
        if kind == "ringing":
            info = callinfo.CallInfo(call_id=record.call_id, linkedid=record.linkedid, number=record.number,
                                     direction=record.direction, did=record.did, result=result,
                                     caller_name=record.caller_name or "")
            owner = None
            if result is not None and result.caller and result.caller.owner:
                owner = result.caller.owner.id
            self.bus.publish({"e": "info", "info": callinfo.to_json(info), "owner": owner, "rings": rings})
        elif kind == "ended":
            self.bus.publish({"e": "ended", "call": record.call_id, "linkedid": record.linkedid})

    def on_ami(self, event):
        """live.LivePipeline.notify: the call model's domain events."""
        kind = type(event).__name__
        call_id = self.call_id_for(self.system_name, event.linkedid)
        if kind == "Ringing" and event.direction == "Inbound":
            self.bus.publish({"e": "ring", "call": call_id, "linkedid": event.linkedid, "ext": event.extension,
                              "leg": event.leg_id, "number": event.caller_number, "name": event.caller_name,
                              "did": event.did, "queue": event.queue})
        elif kind == "RingingStopped":
            self.bus.publish({"e": "stop", "call": call_id, "ext": event.extension, "leg": event.leg_id,
                              "reason": event.reason})
        elif kind == "Answered":
            self.bus.publish({"e": "answered", "call": call_id, "ext": event.extension})
        elif kind == "Transferred":
            self.bus.publish({"e": "transferred", "call": call_id, "from": event.from_extension,
                              "to": event.to_extension})
        elif kind == "Ended":
            self.bus.publish({"e": "ended", "call": call_id, "linkedid": event.linkedid})

    # -- consume ---------------------------------------------------------------
    def post_event(self, event):
        self._post(self._apply, event)

    def _apply(self, event):
        handler = getattr(self, "_on_" + str(event.get("e")), None)
        if handler is None:
            log.warning("unknown popup event %r", event.get("e"))
            return
        handler(event)

    def _on_info(self, event):
        info = callinfo.from_json(event["info"])
        self.infos[info.linkedid] = (info, self.clock())
        self.book.refresh(info.call_id, info)
        if self.ami_driven or event.get("rings"):
            return                    # AMI (or the plugin) says which phones ring; this brought the lookup
        users = [self._user(event.get("owner"))]
        if users[0] is None:
            users = [self._user_at(extension) for extension in self.fallback_extensions]
        for user in users:
            if _pops_up(user):
                self.book.ring(info, user, "owner")

    def _on_ring(self, event):
        user = self._user_at(event["ext"])
        if not _pops_up(user):
            return
        known = self.infos.get(event["linkedid"])
        info = known[0] if known else callinfo.CallInfo(
            call_id=event["call"], linkedid=event["linkedid"], number=event.get("number") or "",
            did=event.get("did") or None, caller_name=event.get("name") or "")
        info = callinfo.replace(info, extension=event["ext"], queue=event.get("queue"))
        self.book.ring(info, user, event.get("leg") or "")

    def _on_stop(self, event):
        user = self._user_at(event["ext"])
        if user is not None:
            self.book.stop_ringing(event["call"], user.id, event.get("leg") or "", event.get("reason") or "")

    def _on_answered(self, event):
        user = self._user_at(event["ext"])
        if user is not None:
            self.book.answered(event["call"], user.id)

    def _on_transferred(self, event):
        old, new = self._user_at(event.get("from")), self._user_at(event.get("to"))
        self.book.transferred(event["call"], old.id if old else None, new)

    def _on_ended(self, event):
        self.book.ended(event["call"])
        self.infos.pop(event.get("linkedid"), None)     # thousands of calls a minute: keep none
        if self.missed is not None:
            self.missed.changed()       # a missed call opens an entry, a connected one closes them

    def _on_tabs(self, event):
        user_id = self.boxes.heard_tabs(event) if self.boxes else None
        if user_id is not None:
            self.book.place(user_id)

    def _on_box(self, event):
        if self.boxes is not None:
            self.boxes.heard_box(event)

    def _on_shown(self, event):
        if self.boxes is not None and event.get("box") != self.boxes.box:
            self.book.mark_shown(event.get("call"), event.get("user"))

    def _on_rendered(self, event):
        self.book.rendered(event["call"], event["user"], event["rendered"], event.get("generation"))

    # -- rendering beside the event loop ---------------------------------------
    def _request_render(self, info, user, generation=None):
        # Never blocks this loop: the greenlet waits for a CRM slot, the events go on.
        greenlet = gevent.spawn(self._render, info, user, generation)
        self._renders.add(greenlet)
        greenlet.link(self._renders.discard)

    def _render(self, info, user, generation):
        with self.render_slots:
            info = self._with_lookup(info)
            try:
                rendered = self.content.render(info, user)
            except Exception:
                log.exception("cannot render the popup of %s", info.call_id)
                return
        self.post_event({"e": "rendered", "call": info.call_id, "user": user.id, "rendered": rendered,
                         "generation": generation})

    def _with_lookup(self, info):
        """AMI saw the call ring before (or without) the AGI's lookup: look the number up once
        per call, not once per ringing phone."""
        if info.result is not None or not info.number:
            return info
        known = self.infos.get(info.linkedid)
        if known and known[0].result is not None:
            return callinfo.replace(info, result=known[0].result)
        try:
            result = self.directory.lookup(info.number)
        except Exception as exc:
            log.warning("lookup for the popup of %s failed: %s", info.call_id, exc)
            return info
        if info.linkedid not in self.infos:
            self.infos[info.linkedid] = (callinfo.replace(info, result=result), self.clock())
        return callinfo.replace(info, result=result)

    # -- users -----------------------------------------------------------------
    def _user(self, user_id):
        return self._ask_directory("user", user_id)

    def _user_at(self, extension):
        return self._ask_directory("user_by_extension", extension)

    def _ask_directory(self, method, key):
        """A CRM user, or None; a CRM that is down costs a popup, never the event loop."""
        if not key:
            return None
        try:
            return getattr(self.directory, method)(key)
        except Exception as exc:
            log.warning("cannot read the CRM user for %s: %s", key, exc)
            return None

    # -- tabs (called by the websocket server) --------------------------------
    def tab_joined(self, tab):
        self._post(self._tab_event, self.book.tab_joined, tab)
        self.on_seen(tab.user_id)
        if self.missed is not None:
            self.missed.joined(tab)

    def tab_changed(self, tab):
        # A tab flapping focus sends many of these: only the latest state matters, so one
        # queued change per tab at most (the queue is shared with every call's events).
        if not getattr(tab, "change_queued", False):
            tab.change_queued = True
            self._post(self._tab_changed, tab)

    def _tab_changed(self, tab):
        tab.change_queued = False
        self._tab_event(self.book.tab_changed, tab)

    def tab_left(self, tab):
        self._post(self._tab_event, self.book.tab_left, tab)

    def _tab_event(self, step, tab):
        step(tab)
        if self.boxes is not None:
            self.boxes.announce(tab.user_id)

    def dismiss(self, tab, call_id):
        self._post(self.book.dismiss, tab.user_id, call_id)

    def transfer(self, tab, call_id, extension):
        self._post(self._transfer, tab, call_id, extension)

    def _transfer(self, tab, call_id, extension):
        popup = self.book.get(tab.user_id, call_id)
        if popup is None:
            ok, text = False, phrase("this call is not yours (or is over)")
        elif self.transfer_call is None:
            ok, text = False, phrase("transfer needs the AMI listener ([ami] host)")
        elif not EXTENSION.fullmatch(extension):
            ok, text = False, phrase("not an extension: %s", repr(extension[:20]))
        elif getattr(tab, "transferring", False):
            ok, text = False, phrase("a transfer is already under way")
        else:
            tab.transferring = True
            gevent.spawn(self._do_transfer, tab, call_id, popup.info.linkedid, extension)
            return
        self._result(tab, call_id, ok, text)

    def _do_transfer(self, tab, call_id, linkedid, extension):
        try:
            if self._user_at(extension) is None:     # only to a colleague's phone, never outside
                ok, text = False, phrase("extension %s is not a CRM user's phone", extension)
            else:
                ok, text = self.transfer_call(linkedid, extension)
        except Exception as exc:
            ok, text = False, phrase("transfer failed: %s", exc)
        finally:
            tab.transferring = False
        self._result(tab, call_id, ok, text)

    def dial(self, tab, message):
        if self.dial_call is None:
            tab.send(messages.encode(messages.dial_status(
                message.get("ref") or "", "refused", "no_ami",
                tab.say(phrase("click-to-call needs the AMI connection ([ami] host)")))))
            return
        self.dial_call(tab, message)

    @staticmethod
    def _result(tab, call_id, ok, text):
        tab.send(messages.encode(messages.result(call_id, ok, tab.say(text))))
