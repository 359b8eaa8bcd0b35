"""Calls that ended while crmagi was down: kept by Asterisk in AstDB, collected later.

Unless the ``hangup`` request told the channel ``CRM_HANGUP=done`` (crmagi has made the
end of the call durable; a crmagi down or killed during the request never says so), the
dialplan include stores what that request would have read in one
AstDB entry, ``crmagi_ended/<UNIQUEID>``.  The next ``hangup`` request that does
reach crmagi, from any call, lists the family with ``DB_KEYS``, spools each entry
as the finish of its call, and deletes it.  Without this, a call hung up during a
crmagi restart would stay "Planned" in the CRM for ever.

The value is ``v1|EPOCH|`` then the fields of ``FIELDS``, each URIENCODE()d by the
dialplan, so caller IDs with ``|`` or ``,`` in them stay data.  The dialplan line
is generated from ``FIELDS`` (``dialplan_value``), so both sides read one list.
"""
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, List, Optional
from urllib.parse import unquote

FAMILY = "crmagi_ended"
DONE_VARIABLE = "CRM_HANGUP"    # "done": crmagi holds the end of the call durably
VERSION = "v1"
# (name in the parsed dict, dialplan expression): the hangup request's variables and
# what a rebuild needs when the start request never reached crmagi either.
FIELDS = (
    ("linkedid", "${CHANNEL(linkedid)}"),
    ("uniqueid", "${UNIQUEID}"),
    ("callerid", "${CALLERID(num)}"),
    ("CRM_DIRECTION", "${CRM_DIRECTION}"),
    ("CRM_DID", "${CRM_DID}"),
    ("CRM_DIALED", "${CRM_DIALED}"),
    ("DIALSTATUS", "${DIALSTATUS}"),
    ("ANSWEREDTIME", "${ANSWEREDTIME}"),
    ("DIALEDTIME", "${DIALEDTIME}"),
    ("DIALEDPEERNUMBER", "${DIALEDPEERNUMBER}"),
    ("MEMBERINTERFACE", "${MEMBERINTERFACE}"),
    ("MIXMONITOR_FILENAME", "${MIXMONITOR_FILENAME}"),
    ("HANGUPCAUSE", "${HANGUPCAUSE}"),
    ("CRM_CALL", "${CRM_CALL}"),
)
KEYS_CHARS = 1800          # read at most this much of DB_KEYS per request (a line stays short)
PER_REQUEST = 20           # entries collected per hangup request (~2 round trips each): the rest
                           # go with the next requests, so none of them runs long


@dataclass
class Ended:
    key: str
    ended_at: datetime
    values: Dict[str, str]


def dialplan_value() -> str:
    """The Set(DB(...)=...) value the include writes (see extensions/)."""
    parts = ["${URIENCODE(%s)}" % expression for _, expression in FIELDS]
    return "|".join([VERSION, "${EPOCH}"] + parts)


def family_of(tenant="") -> str:
    """A tenant's own AstDB family: on a shared Asterisk, one tenant's hangup requests must
    never collect (and write into its CRM) another tenant's calls."""
    return FAMILY + ("_" + tenant if tenant else "")


def keys_expression(family=FAMILY) -> str:
    return "${DB_KEYS(%s):0:%d}" % (family, KEYS_CHARS)


def parse_keys(text: Optional[str]) -> List[str]:
    """Keys from a DB_KEYS reply; a key cut by the length limit is left for later."""
    keys = [key for key in (text or "").split(",") if key]
    if text and len(text) >= KEYS_CHARS and keys:
        keys.pop()
    return keys


def parse(key: str, text: Optional[str]) -> Optional[Ended]:
    """One entry, or None when it is not ours (then it is deleted, not retried)."""
    parts = (text or "").split("|")
    if len(parts) != len(FIELDS) + 2 or parts[0] != VERSION:
        return None
    try:
        ended_at = datetime.fromtimestamp(int(parts[1]), timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    values = {name: unquote(value) for (name, _), value in zip(FIELDS, parts[2:])}
    return Ended(key, ended_at, values)
