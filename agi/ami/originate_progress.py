"""What the page shows while a click-to-call goes on, derived from AMI events (pure).

One ``Watch`` per Originate, fed every AMI event; ``feed`` returns a ``Progress`` when the
page should change.  How Asterisk 22 shows it (shared/fixtures/asterisk 07a/07b/07c):

* the first leg (the user's phone) is the channel whose Uniqueid we chose with ``ChannelId``.
  Originate dials it without a calling channel: ``DialBegin``/``DialEnd`` with only
  ``Dest*`` headers.  ``DialEnd DialStatus`` says answered, BUSY, NOANSWER, ...
* ``OriginateResponse`` (same ActionID) follows: ``Response: Success`` once the phone
  answered, else ``Failure`` with ``Reason`` 3 (rang, not answered), 5 (busy), 1 (hung up),
  0 or 8 (no such phone, unreachable: offline) -- and then ``Channel`` is the dial string
  and ``Uniqueid`` ``<unknown>``, so only the ActionID matches it.
* once answered, the first leg runs the outbound dialplan: its own ``DialBegin`` (``Channel``
  = our channel) dials the number, and that ``DialEnd`` says whether the number answered.
* the ``Hangup`` of our channel ends it all.
"""
from typing import NamedTuple, Optional

from crmlocale.catalogues import Phrase, phrase

FINAL = ("failed", "ended")
# OriginateResponse Reason (AST_CONTROL_*) of a failed first leg -> why, for the page (in the
# clicking user's language: webpush/hub.py Tab.say)
ORIGINATE_REASON = {"1": ("your_rejected", phrase("your phone rejected the call")),
                    "3": ("your_noanswer", phrase("your phone was not answered")),
                    "5": ("your_busy", phrase("your phone is busy")),
                    "8": ("your_offline", phrase("your phone is offline or unreachable")),
                    "0": ("your_offline", phrase("your phone is offline or unreachable"))}
YOUR_DIAL = {"BUSY": ORIGINATE_REASON["5"], "NOANSWER": ORIGINATE_REASON["3"],
             "CHANUNAVAIL": ORIGINATE_REASON["0"], "CONGESTION": ORIGINATE_REASON["8"]}
NUMBER_DIAL = {"BUSY": ("number_busy", phrase("the number is busy")),
               "NOANSWER": ("number_noanswer", phrase("the number did not answer")),
               "CHANUNAVAIL": ("number_unreachable", phrase("the number cannot be reached")),
               "CONGESTION": ("number_unreachable", phrase("the number cannot be reached")),
               "CANCEL": ("cancelled", phrase("you hung up before the number answered"))}


class Progress(NamedTuple):
    state: str        # ringing | connecting | connected | failed | ended
    reason: str       # a code for failed/ended ('' otherwise)
    text: Phrase      # what the page shows


class Watch:
    def __init__(self, action_id, uniqueid, number, phone):
        self.action_id, self.uniqueid, self.number, self.phone = action_id, uniqueid, number, phone
        self.state = "accepted"
        self.dialled = False          # our channel began dialling the number
        self.last: Optional[Progress] = None

    @property
    def done(self):
        return self.state in FINAL

    def concerns(self, msg) -> bool:
        return (msg.get("ActionID") == self.action_id and msg.event == "OriginateResponse") or \
            self.uniqueid in (msg.get("Uniqueid"), msg.get("DestUniqueid"))

    def feed(self, msg) -> Optional[Progress]:
        """One unescaped AMI event (amiproto.Message) -> the new progress, or None."""
        if self.done or not self.concerns(msg):
            return None
        handler = getattr(self, "_on_" + (msg.event or ""), None)
        progress = handler(msg) if handler is not None else None
        if progress is None or progress == self.last:
            return None
        self.state, self.last = progress.state, progress
        return progress

    def _ours(self, msg):
        """True: our channel dials the number; False: Originate dials our phone."""
        return msg.get("Uniqueid") == self.uniqueid and bool(msg.get("Channel"))

    def _on_DialBegin(self, msg):
        if self._ours(msg):
            self.dialled = True
            return Progress("connecting", "", phrase("calling %s…", self.number))
        if msg.get("DestUniqueid") == self.uniqueid and self.state == "accepted":
            return Progress("ringing", "", phrase("your phone %s is ringing: pick it up", self.phone))
        return None

    def _on_DialEnd(self, msg):
        status = (msg.get("DialStatus") or "").upper()
        if self._ours(msg):
            if status == "ANSWER":
                return Progress("connected", "", phrase("connected to %s", self.number))
            reason, text = NUMBER_DIAL.get(status, ("number_failed", phrase("the call to the number failed (%s)",
                                                                             status or "no status")))
            return Progress("failed", reason, text)
        if msg.get("DestUniqueid") != self.uniqueid:
            return None
        if status == "ANSWER":
            return self._answered()
        if status in YOUR_DIAL:
            return Progress("failed", *YOUR_DIAL[status])
        return None

    def _answered(self):
        if self.state in ("accepted", "ringing"):
            return Progress("connecting", "", phrase("you answered: calling %s…", self.number))
        return None

    def _on_OriginateResponse(self, msg):
        if msg.get("Response") == "Success":
            return self._answered()
        reason = ORIGINATE_REASON.get(msg.get("Reason") or "0", ORIGINATE_REASON["0"])
        return Progress("failed", *reason)

    def _on_Hangup(self, msg):
        if msg.get("Uniqueid") != self.uniqueid:
            return None
        if self.state == "connected":
            return Progress("ended", "hangup", phrase("call ended"))
        if self.state == "connecting" and self.dialled:
            return Progress("failed", "hangup", phrase("the call ended before %s answered", self.number))
        if self.state == "connecting":
            return Progress("failed", "not_dialled", phrase("%s was not dialled: the outbound dialplan has no route "
                                                            "for it", self.number))
        return None       # the first leg never answered: OriginateResponse says why
