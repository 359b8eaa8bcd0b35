"""PURE business rules for a finished call: SuiteCRM status, outcome, duration and texts.

No I/O and no SQLAlchemy: ``calls.py`` applies these, tests call them directly.
SuiteCRM's ``calls`` table is utf8mb3 with ``name varchar(50)`` and the CRM database
runs in strict mode, so every text made here is already safe to write as is.
"""
import re

NAME_MAX = 50   # calls.name is varchar(50); strict mode rejects longer values

HELD = "Held"
NOT_HELD = "Not Held"

# DIALSTATUS of an unanswered outbound call -> outcome.  Anything else that is
# non-empty (INVALIDARGS, DONTCALL, TORTURE, ...) is a failure too.
_OUTBOUND_MISSES = {
    "NOANSWER": "noanswer",
    "BUSY": "busy",
    "CANCEL": "cancelled",
    "CHANUNAVAIL": "failed",
    "CONGESTION": "failed",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")


def is_inbound(direction):
    return str(direction or "").strip().lower().startswith("in")


def normalize_direction(direction):
    """SuiteCRM's ``call_direction_dom`` key: ``Inbound`` or ``Outbound``."""
    return "Inbound" if is_inbound(direction) else "Outbound"


def _present(value):
    return value is not None and str(value).strip() != ""


def _positive(value):
    try:
        return float(str(value).strip()) > 0
    except ValueError:
        return False


def answered(dial_status, answered_seconds):
    """Whether the call was answered.

    ``answered_seconds`` is ANSWEREDTIME as Asterisk left it: None or "" when it was
    empty.  Queue() and AgentRequest() leave DIALSTATUS empty, so there a present
    ANSWEREDTIME (even "0") is the only sign of an answer.  Dial() blanks
    ANSWEREDTIME when it starts, so after an explicit non-ANSWER status only a
    positive value (a later Queue() answered) counts; that also tolerates callers
    that write 0 instead of None for "never answered".
    """
    status = str(dial_status or "").strip().upper()
    if status == "ANSWER":
        return True
    if not status:
        return _present(answered_seconds)
    return _present(answered_seconds) and _positive(answered_seconds)


def outcome(direction, dial_status, answered_seconds):
    """``(status, outcome)``: status is SuiteCRM's Held/Not Held (both land in History).

    An inbound call that was not answered is always ``missed``, whatever the
    reason, so the History shows it apart from answered calls.  An unanswered
    outbound call keeps the reason; an empty DIALSTATUS there means the caller
    hung up before anything was dialled.
    """
    if answered(dial_status, answered_seconds):
        return HELD, "answered"
    if is_inbound(direction):
        return NOT_HELD, "missed"
    status = str(dial_status or "").strip().upper()
    if not status:
        return NOT_HELD, "cancelled"
    return NOT_HELD, _OUTBOUND_MISSES.get(status, "failed")


def duration_parts(seconds):
    """``(hours, minutes)`` with partial minutes rounded up: 5 s -> (0, 1), 0 s -> (0, 0)."""
    try:
        total = max(0, int(seconds or 0))
    except (TypeError, ValueError):
        total = 0
    minutes = (total + 59) // 60
    return minutes // 60, minutes % 60


def utf8mb3_safe(text):
    """Drop what a utf8mb3 column rejects: characters outside the BMP and lone surrogates."""
    if text is None:
        return None
    text = str(text)
    if _SAFE.fullmatch(text):        # nearly always: no per-character loop
        return text
    return "".join(ch for ch in text if ord(ch) < 0xD800 or 0xE000 <= ord(ch) <= 0xFFFF)


_SAFE = re.compile("[\u0000-\ud7ff\ue000-\uffff]*")


def _one_line(text):
    text = _CONTROL.sub(" ", utf8mb3_safe(text) or "")
    return _SPACES.sub(" ", text).strip()


def _cut(text, limit):
    if len(text) <= limit:
        return text
    return text[:limit - 1].rstrip() + "\u2026"


def _same(text):
    return text


def subject(rec, _=_same):
    """The Call's name, at most 50 characters: who called whom, and whether it was missed.
    ``_``: gettext of the site's default language (SuiteCRM shows subjects as stored, to everyone)."""
    number = _one_line(rec.number) or _("unknown number")
    name = _one_line(rec.parent_name)
    if not is_inbound(rec.direction):
        template = _("Outbound call to %s")
    elif rec.outcome == "missed" or rec.status == NOT_HELD:
        template = _("Missed call from %s")
    else:
        template = _("Inbound call from %s")
    if name:
        tail = " (%s)" % number
        room = NAME_MAX - len(template % "") - len(tail)
        # Shorten the name rather than the number: the number is what people dial back.
        if room >= 4:
            return template % (_cut(name, room) + tail)
    return _cut(template % number, NAME_MAX)


def _seconds(value):
    return None if value is None else "%s s" % value


def description(rec):
    """The Call's description: the exact facts the rounded duration and short name lose."""
    state = rec.outcome or "in progress"
    lines = ["%s call, %s." % (normalize_direction(rec.direction), state)]
    fields = (
        ("Number", rec.number),
        ("Caller" if is_inbound(rec.direction) else "Callee",
         "%s (%s)" % (rec.parent_name, rec.parent_module) if rec.parent_name else None),
        ("DID", rec.did),
        ("Extension", rec.extension),
        ("Answered by extension", rec.answered_extension),
        ("Dial status", rec.dial_status),
        ("Talk time", _seconds(rec.talk_seconds)),
        ("Ring time", _seconds(rec.ring_seconds)),
        ("Recording", rec.recording),
        ("Hangup cause", rec.hangup_cause),
        ("Linked id", rec.linkedid),
        ("Source", "Asterisk's CDR (backfilled: crmagi was down)" if rec.backfilled else None),
    )
    for label, value in fields:
        if _present(value):
            lines.append("%s: %s" % (label, _one_line(value)))
    return "\n".join(lines)
