"""The click-to-call mark: how an originated call tells the outgoing AGI what was clicked.

crmagi's Originate sets the channel variable ``CRM_CLICK`` to a signed, short-lived mark:
the user who clicked, their extension, and the record the number was clicked on (checked
against the CRM before the call was placed).  The ``outgoing`` request reads it back with
``GET VARIABLE`` and, when the signature holds and it has not expired, links the Call to that
record and assigns it to that user.  Anything else on the channel -- a variable set by other
dialplan or another AMI client -- is ignored: only crmagi holds the key ([webpush] secret),
and every FastAGI worker can check it without asking the one that placed the call.

Format (no commas: Originate splits ``Variable`` on them):
``base64url(JSON) "." hex(HMAC-SHA256(key, "crmagi-click:" + base64url(JSON)))``.
"""
import base64
import binascii
import hashlib
import hmac
import json
from typing import NamedTuple, Optional

VARIABLE = "CRM_CLICK"
MAX_MARK = 1500
_DOMAIN = b"crmagi-click:"          # a popup token can never pass for a mark, nor the reverse


class Mark(NamedTuple):
    user_id: str
    extension: str
    number: str
    module: str          # '' when the number was not clicked on a record (the phone book)
    record_id: str
    record_name: str
    expires_at: int


def _sign(secret, payload):
    return hmac.new(secret.encode("utf-8"), _DOMAIN + payload.encode("ascii"), hashlib.sha256).hexdigest()


def mint(secret, mark: Mark) -> str:
    data = json.dumps(mark._asdict(), separators=(",", ":"), ensure_ascii=True).encode("ascii")
    payload = base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    return payload + "." + _sign(secret, payload)


def verify(secret, text, now) -> Optional[Mark]:
    """The mark, or None when there is none, it is forged, malformed or expired."""
    if not secret or not isinstance(text, str) or not text.isascii() or len(text) > MAX_MARK:
        return None
    payload, sep, signature = text.partition(".")
    if not sep or not hmac.compare_digest(_sign(secret, payload), signature.lower()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        mark = Mark(**{key: data[key] for key in Mark._fields})
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if not all(isinstance(value, str) for value in mark[:-1]) or not isinstance(mark.expires_at, int):
        return None
    return mark if mark.expires_at >= now else None
