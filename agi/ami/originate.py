"""Click-to-call requests, as pure functions: the number, the caller ID, the Originate.

The page only sends a hint (a number and the record it was clicked on); everything
Asterisk is asked to do is decided here from the CRM user and the config:

* the number is reduced to digits (a leading ``+`` kept) and must match
  ``[ami] originate_pattern`` in full; text with letters is refused rather than guessed at
  (``030 555 x12`` would otherwise dial the extension as part of the number);
* the first leg rings the clicking user's own phone: ``[ami] originate_channel`` with the
  user's extension, or, for an app_agent_pool agent logged in now, an AgentRequest of that
  agent through ``[ami] agent_context`` (the agent's phone is already off-hook in
  AgentLogin: dialling the phone itself would find it busy);
* the caller ID the phone shows names the callee (``"Anna Smith 004930987654" <101>``) while
  its number stays the user's extension, so the outbound dialplan still sees who calls;
* ``ChannelId`` fixes the Uniqueid (and so the Linkedid) of the first leg: the AMI events of
  this call are recognised from the first one on (agi/ami/originate_progress.py).
"""
import re
from typing import List, NamedTuple, Optional, Tuple

from crmlocale.catalogues import N_, phrase

_ALLOWED = re.compile(r"^\+?[0-9 ()./-]+$")
_NAME_JUNK = re.compile(r'["<>\\\r\n\x00-\x1f]')
MAX_CALLERID_NAME = 60


class Refused(ValueError):
    """The click is refused; ``text`` is what the page shows (in the user's language), the
    message the same in English (logs, tests)."""

    def __init__(self, msgid, *args):
        self.text = phrase(msgid, *args)
        super().__init__(str(self.text))


class Target(NamedTuple):
    """Where the first leg (the user's own phone) is rung."""
    channel: str          # the Originate Channel
    phone: str            # what the page is told ("101", "agent 1001 (phone 101)")


def dial_number(raw, pattern) -> str:
    """``+49 (30) 111-111`` -> ``+4930111111``; Refused when it is not a number to dial."""
    text = (raw or "").strip()
    if text.lower().startswith("tel:"):
        text = text[4:]
    if not text or not _ALLOWED.match(text):
        raise Refused(N_("not a phone number: %s"), repr(text[:40]))
    number = ("+" if text.startswith("+") else "") + re.sub(r"[^0-9]", "", text)
    if not re.fullmatch(pattern, number):
        raise Refused(N_("%s is not a number this PBX may dial ([ami] originate_pattern)"), number)
    return number


def caller_id(name, number, extension) -> str:
    """What the user's phone shows while it rings: who it is about to call."""
    label = _NAME_JUNK.sub("", name or "").strip()
    label = ("%s %s" % (label, number) if label else number)[:MAX_CALLERID_NAME]
    return '"%s" <%s>' % (label, extension)


def agent_of(extension, logged) -> Optional[str]:
    """The app_agent_pool agent a user's extension stands for: the extension is an agent id
    logged in now, or the phone an agent is logged in from.  ``logged``: agent id -> phone."""
    if not extension:
        return None
    if extension in logged:
        return extension
    return next((agent for agent, phone in sorted(logged.items()) if phone == extension), None)


def first_leg(extension, template, logged, agent_context) -> Target:
    agent = agent_of(extension, logged)
    if agent is not None:
        # Local/<agent>@<context>/n: its ;2 half runs AgentRequest(<agent>), which hands the call
        # to the phone logged in as that agent (/n: no optimisation, the ;1 half keeps our id).
        return Target("Local/%s@%s/n" % (agent, agent_context), "agent %s (phone %s)" % (agent, logged[agent]))
    return Target(template.format(exten=extension), extension)


def destination(number, context, logged, agent_context) -> Tuple[str, str]:
    """(Context, Exten) of the second leg: an agent id called from the phone book is an
    AgentRequest, everything else goes through the normal outbound dialplan."""
    if number in logged:
        return agent_context, number
    return context, number


def originate_headers(target: Target, context, exten, callerid, timeout_s, channel_id,
                      variables=()) -> List[Tuple[str, str]]:
    headers = [("Channel", target.channel), ("Context", context), ("Exten", exten), ("Priority", "1"),
               ("CallerID", callerid), ("Timeout", str(int(timeout_s * 1000))), ("Async", "true"),
               ("ChannelId", channel_id)]
    # Originate splits a Variable header on commas: values must not hold one.
    headers += [("Variable", "%s=%s" % (name, value)) for name, value in variables if "," not in value]
    return headers
