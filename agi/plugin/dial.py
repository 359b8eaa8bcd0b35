"""Click-to-call for a tenant whose PBX speaks the plugin API instead of AMI.

The same rules as AMI click-to-call (agi/ami/click2call.py: the user's own phone only, the
number reduced and matched against ``[ami] originate_pattern``, the rate limit, the
clicked record checked) and the same messages to the page; only the way the call is
placed differs: an ``originate`` command to the PBX connection that owns the user's
extension, carrying crmagi's signed click mark.  The PBX answers the command when the
user's phone answered (or did not), then echoes the mark in the ``start`` of the call it
places, which links the Call to the clicked record; that call's events drive the page.
"""
import time

from crmlocale.catalogues import N_, phrase

from agi.ami import clickmark, originate
from agi.ami.click2call import MARK_GRACE, ClickToCall
from agi.ami.originate_progress import NUMBER_DIAL
from agi.plugin.calls import DIAL_STATUS

MAX_FOLLOWED = 1000


class PluginClickToCall(ClickToCall):
    def __init__(self, ami_settings, plugin, directory, secret, internal_max_digits=5,
                 clock=time.monotonic, wall=time.time):
        super().__init__(ami_settings, None, None, directory, secret, internal_max_digits, clock, wall)
        self.plugin = plugin
        self.by_click = {}          # mark text -> (tab, ref, number), until the call starts
        self.by_call = {}           # plugin linkedid -> (tab, ref, number)
        plugin.calls.observers.append(self.on_call)

    def _place(self, tab, ref, message):
        settings = self.settings
        number = originate.dial_number(message.get("number"), settings.originate_pattern)
        user = self._user(tab.user_id)
        if not self.plugin.owns(user.extension):
            raise originate.Refused(N_("no connected PBX owns your extension %s"), user.extension)
        self._admit(user.id)
        module, record_id, name = self._record(message.get("module"), message.get("record"), number)
        mark = clickmark.mint(self.secret, clickmark.Mark(
            user.id, user.extension, number, module, record_id, name[:80],
            int(self.wall()) + settings.originate_timeout + MARK_GRACE))
        self.stats["originated"] += 1
        self._send(tab, ref, "accepted", "", phrase("calling your phone %s…", user.extension))
        self._remember(self.by_click, mark, (tab, ref, number))
        ok, text = self.plugin.originate(user.extension, number, click=mark,
                                         callerid_name=originate.caller_id(name, number, user.extension),
                                         timeout=settings.originate_timeout)
        if not ok:
            self.by_click.pop(mark, None)
            self._send(tab, ref, "failed", "pbx_refused", text)

    def on_call(self, call, message):
        """Every call event of the tenant's plugin connections (PluginCalls observer)."""
        event, linkedid = message["event"], call.record.linkedid
        if event == "start" and message.get("click") in self.by_click:
            followed = self.by_click.pop(message["click"])
            self._remember(self.by_call, linkedid, followed)
            self._send(followed[0], followed[1], "connecting", "", phrase("dialling %s…", followed[2]))
        followed = self.by_call.get(linkedid)
        if followed is None:
            return
        tab, ref, number = followed
        if event == "answered":
            self._send(tab, ref, "connected", "", phrase("connected to %s", number))
        elif event == "end":
            del self.by_call[linkedid]
            if message["cause"] == "answered":
                self._send(tab, ref, "ended", "", phrase("call ended"))
            else:
                reason, text = NUMBER_DIAL.get(DIAL_STATUS.get(message["cause"], ""),
                                               ("number_unreachable", phrase("the number cannot be reached")))
                self._send(tab, ref, "failed", reason, text)

    @staticmethod
    def _remember(table, key, value):
        while len(table) >= MAX_FOLLOWED:       # a PBX that never reports cannot grow it for ever
            table.pop(next(iter(table)))
        table[key] = value
