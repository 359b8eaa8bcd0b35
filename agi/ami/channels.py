"""Channel names, extensions and the mutable records the call model (agi/ami/callmodel.py) keeps.

Pure: no I/O, no clock.  What Asterisk 22 shows (shared/fixtures/asterisk):

* a phone is ``PJSIP/101-0000001a`` in production and a Local pair
  ``Local/101@phones-00000013;1`` / ``;2`` in the recordings: ``;1`` is the side that was
  dialled, ``;2`` runs the dialplan.  Both halves are one phone (one leg).
* the extension comes from the dial string (``101@phones/n``, ``PJSIP/101``, ``101``,
  ``Local/101@phones/n``) or the channel name, never from ``DestCallerIDNum`` (that is the
  number the caller dialled).
* ``<unknown>`` is AMI's placeholder for an unset caller ID; ``Unknown`` and ``anonymous``
  are real caller IDs and stay.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

INBOUND, OUTBOUND = "Inbound", "Outbound"          # the CRM's calls.direction values
INTERNAL, IGNORED = "internal", "ignored"
MAX_CHANNELS = 200      # per call: a call with more is pathological; further channels are not followed
MAX_LEGS = 100          # per call: ring-all queues of 100 members still fit; closed legs are pruned first
MAX_ANSWERED = 50       # extensions kept per call for Ended.answered_extensions

# Dial statuses and hangup causes -> RingingStopped.reason
STOP_REASON = {"NOANSWER": "no_answer", "BUSY": "busy", "CONGESTION": "busy", "CHANUNAVAIL": "busy",
               "CANCEL": "cancelled"}
CAUSE_REASON = {"17": "busy", "18": "no_answer", "19": "no_answer", "26": "answered_elsewhere"}
CAUSE_STATUS = {"17": "BUSY", "18": "NOANSWER", "19": "NOANSWER"}   # when no DialEnd said it

_TECH = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)/(.*)$")
_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])?$")
_NUMBER = re.compile(r"^\+?[0-9*#]+$")


def clean(value) -> str:
    """AMI's ``<unknown>`` means unset; everything else is data, even ``Unknown``."""
    value = (value or "").strip()
    return "" if value == "<unknown>" else value


def technology(name) -> str:
    match = _TECH.match(name or "")
    return match.group(1) if match else ""


def is_local(name) -> bool:
    return technology(name).lower() == "local"


def local_partner(name) -> Optional[str]:
    """``Local/x@y-0001;1`` <-> ``Local/x@y-0001;2``; None for other technologies."""
    if is_local(name) and name[-2:] in (";1", ";2"):
        return name[:-1] + ("2" if name.endswith("1") else "1")
    return None


def peer_extension(peer) -> str:
    """``101@phones/n``, ``PJSIP/101``, ``Local/101@phones-00000013;1``, ``PJSIP/101-0000001a`` -> ``101``.

    Named endpoints keep their name (``PJSIP/alice-00000001`` -> ``alice``); '' when empty.
    """
    text = (peer or "").strip().split("&")[0]
    match = _TECH.match(text)
    if match:
        text = match.group(2)
    text = _SUFFIX.sub("", text.split("@")[0].split("/")[0])
    return text


def channel_extension(name, caller_num) -> str:
    """The phone behind a channel that places a call: its name, unless it is a Local channel.

    A Local channel's name holds what was dialled (``Local/004930987654@from-internal``), so
    the phone it stands for is its caller ID (the recordings simulate phones that way).
    """
    number = clean(caller_num)
    if is_local(name) and number:
        return number
    return peer_extension(name) or number


def is_internal(extension, max_digits) -> bool:
    """Short numbers and named endpoints are phones; long numbers are the outside world."""
    if not extension:
        return False
    if _NUMBER.match(extension):
        return len(extension.lstrip("+")) <= max_digits
    return True


def parse_seconds(value) -> Optional[int]:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


@dataclass(eq=False)
class Chan:
    """One Asterisk channel, as far as the model needs it."""
    uid: str
    name: str
    call: str                     # linkedid of the call that owns it (sticky: see CallModel._chan)
    context: str = ""
    exten: str = ""
    state: str = ""
    cid_num: str = ""
    cid_name: str = ""
    alive: bool = True
    bridge: str = ""
    recording: str = ""           # its MIXMONITOR_FILENAME


@dataclass(eq=False)
class Leg:
    """One phone being rung (one ring attempt), however many channels and devices it takes."""
    leg_id: str                   # Uniqueid of the first dialled channel
    extension: str
    phone: bool                   # False: the outside party of an outbound call (no popup)
    dialer: str                   # Uniqueid of the channel that dialled it ('' when not dialled)
    queue: Optional[str]
    seq: int                      # ring order; an answer with a higher seq was "elsewhere"
    devices: Set[str] = field(default_factory=set)   # dialled channels still ringing/talking
    state: str = "ringing"        # ringing | answered | stopped
    rang: bool = False            # Ringing emitted
    closed: bool = False          # RingingStopped or Answered emitted
    consult: bool = False         # answered a consultation: Answered waits for the transfer
    connected: bool = False       # answered and still in the call (bridged or about to be)


@dataclass(eq=False)
class Call:
    linkedid: str
    last_seen: float
    origin: Optional[str] = None                          # Uniqueid of the first channel
    caller: Set[str] = field(default_factory=set)         # the origin and its Local partner
    channels: Dict[str, Chan] = field(default_factory=dict)
    legs: "OrderedDict[str, Leg]" = field(default_factory=OrderedDict)
    device_leg: Dict[str, str] = field(default_factory=dict)   # channel Uniqueid -> leg_id
    direction: Optional[str] = None                       # Inbound | Outbound | internal | ignored
    forced: bool = False                                  # CRM_DIRECTION said so
    agent_session: bool = False                           # an app_agent_pool login: never a call
    did: str = ""
    queue: Optional[str] = None
    holder: Optional[str] = None                          # leg_id of the leg that has the caller
    answered_at: Optional[float] = None
    talk_end: Optional[float] = None                      # when the answering leg stopped talking
    answer_seq: int = 0
    answered: List[str] = field(default_factory=list)
    dial_status: str = ""                                 # last DialStatus of a dial by the caller
    originate_status: str = ""
    cause: str = ""                                       # last hangup cause on the caller side
    talk_reported: Dict[str, int] = field(default_factory=dict)   # AgentComplete TalkTime per member
    recordings: Dict[str, bool] = field(default_factory=dict)     # path -> Recording emitted
    transfer_pending: bool = False                        # a BlindTransfer was told; its Dial follows
    transfers: Set[Tuple[str, ...]] = field(default_factory=set)
    originate_key: str = ""                               # "Local/102@phones/n": a failed OriginateResponse
    gap: bool = False                                     # it ended while we were not listening
    remote: str = ""                                      # the number an outbound call dialled
    emitted: bool = False                                 # something was reported: close it too

    @property
    def active(self) -> bool:
        return self.direction in (INBOUND, OUTBOUND) and not self.agent_session

    def leg_of(self, uid) -> Optional[Leg]:
        leg_id = self.device_leg.get(uid)
        return self.legs.get(leg_id) if leg_id else None


class AgentBook:
    """app_agent_pool: agent id <-> the channel (and so the phone) logged in as that agent."""

    MAX = 10000

    def __init__(self, static=None):
        self.static = dict(static or {})                  # agent id -> extension, from config
        self.logged: Dict[str, Tuple[str, str]] = {}      # agent id -> (channel Uniqueid, extension)
        self.by_uid: Dict[str, str] = {}
        self.members: "OrderedDict[str, str]" = OrderedDict()  # queue member interface -> agent id

    def login(self, agent, chan: Chan):
        self.logoff(agent)
        if len(self.logged) < self.MAX:
            self.logged[agent] = (chan.uid, channel_extension(chan.name, chan.cid_num))
            self.by_uid[chan.uid] = agent

    def logoff(self, agent):
        uid, _ = self.logged.pop(agent, (None, None))
        self.by_uid.pop(uid, None)

    def member(self, interface, state_interface):
        """QueueMemberStatus/QueueMember: ``Local/1001@agent-request/n`` is ``Agent:1001``."""
        agent = _agent_id(state_interface)
        if interface and agent:
            self.members[interface] = agent
            self.members.move_to_end(interface)
            while len(self.members) > self.MAX:
                self.members.popitem(last=False)

    def agent_for(self, peer) -> Optional[str]:
        return _agent_id(peer) or self.members.get(peer or "")

    def extension(self, agent) -> str:
        """Where the agent really rings: the phone logged in now, else the configured one."""
        if agent in self.logged:
            return self.logged[agent][1] or agent
        return self.static.get(agent, agent)

    def clear(self):
        self.logged.clear()
        self.by_uid.clear()


def _agent_id(peer) -> Optional[str]:
    text = peer or ""
    for prefix in ("Agent:", "Agent/"):
        if text.startswith(prefix) and len(text) > len(prefix):
            return text[len(prefix):]
    return None
