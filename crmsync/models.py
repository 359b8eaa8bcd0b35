"""Plain values crossing the crmsync boundary (no SQLAlchemy types).

agi/ and webpush/ only ever see these; they are also what the durable spool
stores, so every field is JSON-friendly (datetimes are UTC-aware and are
serialised as ISO strings by ``to_json``/``from_json``).
"""
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional, Tuple


def _fields_of(obj):
    """The fields of a dataclass of plain values as a new dict.  ``dataclasses.asdict`` deep-copies
    every value: it was a fifth of the CPU of each call write (each op is written ahead)."""
    names = _FIELD_NAMES.get(type(obj))
    if names is None:
        names = _FIELD_NAMES[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    return {name: getattr(obj, name) for name in names}


_FIELD_NAMES = {}


@dataclass(frozen=True)
class ModuleSpec:
    """One searchable CRM module, as configured."""
    name: str                       # SuiteCRM module name: Contacts, Accounts, Leads, ...
    table: str
    phone_fields: Tuple[str, ...]
    name_fields: Tuple[str, ...] = ()   # empty: first_name+last_name, else name
    link_table: str = ""            # calls_contacts / calls_leads; empty: parent only
    link_column: str = ""


@dataclass(frozen=True)
class LookupRules:
    """How numbers are compared (see README, "Matching rules")."""
    modules: Tuple[ModuleSpec, ...]
    default_region: str = "US"
    internal_max_digits: int = 5
    suffix_digits: int = 7
    extension_field: str = "phone_work"


@dataclass(frozen=True)
class User:
    id: str
    user_name: str
    full_name: str
    extension: Optional[str]
    # Display only (the phone book): a user is the same user whatever their title says.
    department: str = field(default="", compare=False)
    title: str = field(default="", compare=False)
    # crmagi's own (crmsync/userprefs.py): more phones of the user, and popups on or off.
    devices: Tuple[str, ...] = field(default=(), compare=False)
    agents: Tuple[str, ...] = field(default=(), compare=False)
    popups: bool = field(default=True, compare=False)
    # A person (not a SuiteCRM group user nor a portal-only user): only people are in the phone book.
    person: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class Caller:
    """The CRM record a number matched."""
    module: str
    record_id: str
    name: str
    account_name: Optional[str]
    owner: Optional[User]
    column: str            # the phone column that matched
    stored_number: str     # the value as typed in the CRM
    rule: str              # "e164" | "national" | "suffix"


@dataclass(frozen=True)
class LookupResult:
    """Outcome of a lookup; ``status`` is the CRM_STATUS contract value."""
    status: str                         # found | unknown | anonymous | internal
    number: str                         # the caller number as received
    e164: Optional[str] = None
    caller: Optional[Caller] = None
    explain: Tuple[str, ...] = ()       # human-readable trace for `crmagi lookup`


@dataclass(frozen=True)
class HistoryItem:
    """One past activity of a CRM record, for the popup's history list."""
    kind: str                           # Call | Meeting | Note | Case
    record_id: str
    subject: str
    when: Optional[datetime]            # UTC-aware; None when the CRM row has no date
    status: str = ""
    direction: str = ""                 # calls only: Inbound | Outbound
    url: str = ""                       # relative: index.php?module=...&action=DetailView&record=...


@dataclass
class CallRecord:
    """Everything crmagi writes about one call; built at start, completed at hangup."""
    call_id: str
    linkedid: str
    uniqueid: str
    direction: str                      # Inbound | Outbound
    number: str                         # the external party: caller (in) or called (out)
    started_at: datetime
    did: Optional[str] = None           # dialled external number for inbound calls
    extension: Optional[str] = None     # internal extension (caller for outbound)
    parent_module: Optional[str] = None
    parent_id: Optional[str] = None
    parent_name: Optional[str] = None
    link_table: str = ""
    link_column: str = ""
    assigned_user_id: Optional[str] = None
    lookup_status: str = "unknown"
    # Filled at hangup:
    ended_at: Optional[datetime] = None
    status: str = "Planned"             # Planned | Held | Not Held
    outcome: Optional[str] = None       # answered | missed | busy | noanswer | failed | cancelled
    dial_status: Optional[str] = None
    talk_seconds: Optional[int] = None
    ring_seconds: Optional[int] = None
    answered_extension: Optional[str] = None
    answered_user_id: Optional[str] = None
    recording: Optional[str] = None
    hangup_cause: Optional[str] = None
    caller_name: Optional[str] = None   # CNAM from the network (untrusted): for the popup only
    backfilled: bool = False            # written from Asterisk's CDR by `crmagi backfill` (agi/cdr/)

    def to_json(self):
        data = _fields_of(self)
        for key in ("started_at", "ended_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data

    @classmethod
    def from_json(cls, data):
        data = dict(data)
        for key in ("started_at", "ended_at"):
            if data.get(key):
                data[key] = datetime.fromisoformat(data[key]).astimezone(timezone.utc)
        return cls(**data)


@dataclass
class LiveUpdate:
    """What the AMI call model learned about a call while it ran (answered, transferred, ...)."""
    call_id: str
    kind: str                           # answered | transferred | recording | attribution
    extension: Optional[str] = None     # answering / transfer-target extension
    user_id: Optional[str] = None       # the CRM user of that extension
    path: Optional[str] = None          # recording
    did: Optional[str] = None
    campaign: Optional[str] = None
    lead_source: Optional[str] = None
    group: Optional[str] = None
    # The call went through crmagi's dialplan include, so its row is coming even when it is
    # not there yet: with [agi] workers > 1 only worker 0 follows AMI, and the row may be
    # in flight or spooled in the worker that took the AGI request.
    awaited: bool = False

    def to_json(self):
        return _fields_of(self)

    @classmethod
    def from_json(cls, data):
        return cls(**data)


@dataclass
class LiveBatch:
    """Live updates of one call that the AMI listener had at the same time (answered and
    recording come in the same burst of events): written in one transaction, in order."""
    call_id: str
    updates: Tuple[LiveUpdate, ...]
    awaited: bool = False               # as LiveUpdate.awaited: any of them is

    @classmethod
    def of(cls, updates):
        """One LiveUpdate stays itself; several of one call become a batch."""
        if len(updates) == 1:
            return updates[0]
        return cls(updates[0].call_id, tuple(updates), any(u.awaited for u in updates))

    def to_json(self):
        return {"call_id": self.call_id, "awaited": self.awaited, "updates": [u.to_json() for u in self.updates]}

    @classmethod
    def from_json(cls, data):
        return cls(data["call_id"], tuple(LiveUpdate.from_json(u) for u in data["updates"]),
                   bool(data.get("awaited")))


@dataclass(frozen=True)
class MissedEntry:
    """One open missed-calls entry of a user (crmsync/missed.py): a number that called and
    nobody answered, since the last call with it that connected."""
    entry_id: str
    number: str                         # as the caller ID came (what a call back dials)
    attempts: int
    first_at: Optional[datetime]        # UTC-aware
    last_at: Optional[datetime]
    module: str = ""                    # the caller's record, when the lookup found one
    record_id: str = ""
    name: str = ""
    caller_name: str = ""               # CNAM of an unknown caller (untrusted text)
    call_id: str = ""                   # the last missed Call
