"""What the popup of one call is about: the input of webpush/content.py (plain values)."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from crmsync.models import Caller, LookupResult, User


@dataclass(frozen=True)
class CallInfo:
    call_id: str                         # the CRM calls.id (uuid5 of system name + linkedid)
    linkedid: str
    number: str                          # the caller's number as received
    direction: str = "Inbound"           # Inbound | Outbound
    did: Optional[str] = None            # the dialled external number
    caller_name: str = ""                # CNAM from the network, untrusted
    result: Optional[LookupResult] = None   # None: the CRM could not be asked in time
    extension: Optional[str] = None      # the phone that rings for this user
    queue: Optional[str] = None


def replace(info: CallInfo, **changes) -> CallInfo:
    return dataclasses.replace(info, **changes)


def to_json(info: CallInfo) -> dict:
    """Plain data for the bus (Redis between boxes)."""
    return dataclasses.asdict(info)


def from_json(data: dict) -> CallInfo:
    data = dict(data)
    result = data.get("result")
    if result is not None:
        caller = result.get("caller")
        if caller is not None:
            owner = caller.get("owner")
            caller = Caller(**dict(caller, owner=User(**owner) if owner else None))
        data["result"] = LookupResult(**dict(result, caller=caller, explain=tuple(result.get("explain", ()))))
    return CallInfo(**data)
