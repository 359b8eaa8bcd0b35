"""Signed, short-lived URLs of call recordings (pure functions).

A recording URL names one CRM user and one Call and expires; it never names a
file.  crmagi mints it (webpush/recordings.py) only for an active user who may
see the Call, and checks both again when the URL is used, so a URL outlives
neither the user's access nor its expiry.

Format: ``/recordings/<payload>.<hex HMAC-SHA256>``, payload =
``base64url({"v":1,"uid":<users.id>,"call":<calls.id>,"exp":<unix>})``.  The key is
derived from ``[webpush] secret`` with a purpose label, so a websocket token
(webpush/auth.py, same secret) can never pass as a recording URL, nor the reverse.
"""
import base64
import binascii
import hashlib
import hmac
import json
from typing import NamedTuple

VERSION = 1
PREFIX = "/recordings/"
MAX_TOKEN = 1024
_PURPOSE = b"crmagi recording url v1"


class UrlError(ValueError):
    """Why a recording URL was refused."""


class Grant(NamedTuple):
    user_id: str
    call_id: str
    expires_at: int


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _PURPOSE, hashlib.sha256).digest()


def _sign(secret: str, payload: str) -> str:
    return hmac.new(_key(secret), payload.encode("ascii"), hashlib.sha256).hexdigest()


def mint(secret: str, user_id: str, call_id: str, now: float, ttl: int) -> str:
    """The path of the recording of ``call_id`` for ``user_id``, valid ``ttl`` seconds."""
    if not secret:
        raise ValueError("no secret: set [webpush] secret")
    claims = {"v": VERSION, "uid": user_id, "call": call_id, "exp": int(now) + int(ttl)}
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8")
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return PREFIX + payload + "." + _sign(secret, payload)


def verify(secret: str, path: str, now: float) -> Grant:
    """The grant of a valid recording path, else UrlError saying why."""
    if not isinstance(path, str) or not path.startswith(PREFIX):
        raise UrlError("not a recording URL")
    token = path[len(PREFIX):]
    if not token or len(token) > MAX_TOKEN or token.count(".") != 1 or not token.isascii():
        raise UrlError("malformed recording URL")
    payload, signature = token.split(".")
    if not hmac.compare_digest(_sign(secret, payload), signature.lower()):
        raise UrlError("bad signature")
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        user_id, call_id, expires = claims["uid"], claims["call"], int(claims["exp"])
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise UrlError("malformed recording URL") from None
    if claims.get("v") != VERSION or not all(isinstance(v, str) and v for v in (user_id, call_id)):
        raise UrlError("malformed recording URL")
    if expires < now:
        raise UrlError("expired recording URL")
    return Grant(user_id, call_id, expires)
