"""Short-lived per-user tokens for the popup websocket (pure functions).

The SuiteCRM hook mints one for ``$current_user`` on every full page load
(webpush/suitecrm/CrmagiPopupHook.php.j2 does exactly what ``mint`` does), the
browser sends it in its first websocket message (never in the URL, so it does not
land in proxy logs), and the push server admits the socket into that user's room
only.  A token names one user and expires: a browser cannot claim another id,
and a leaked token is worth minutes, not forever.

Format: ``base64url(payload) "." hex(HMAC-SHA256(secret, base64url(payload)))``
with payload ``{"v":1,"uid":"<users.id>","iat":<unix>,"exp":<unix>}``.
"""
import base64
import binascii
import hashlib
import hmac
import json
from typing import NamedTuple

from crmlocale.catalogues import N_

VERSION = 1
MAX_TOKEN = 2048
CLOCK_SKEW = 30      # seconds a token may come from a clock slightly ahead (SuiteCRM on another box)


class TokenError(ValueError):
    """Why a token was refused; the message is what the browser is told."""


class Claims(NamedTuple):
    user_id: str
    issued_at: int
    expires_at: int
    session_start: int      # when the page minted the first token of a renewed chain


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).hexdigest()


def mint(secret: str, user_id: str, now: float, ttl: int, session_start=None) -> str:
    """``session_start``: set by the push server when it renews a token (claim ``ses``), so a
    chain of renewals cannot outlive the session the page began."""
    if not secret:
        raise ValueError("no secret: set [webpush] secret")
    claims = {"v": VERSION, "uid": user_id, "iat": int(now), "exp": int(now) + int(ttl)}
    if session_start is not None:
        claims["ses"] = int(session_start)
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return payload + "." + _sign(secret, payload)


def verify(secret: str, token, now: float) -> Claims:
    """The claims of a valid token, else TokenError saying why."""
    if not isinstance(token, str) or not token:
        raise TokenError(N_("no token"))
    if len(token) > MAX_TOKEN or token.count(".") != 1 or not token.isascii():
        raise TokenError(N_("malformed token"))     # HMAC and compare_digest take ASCII only
    payload, signature = token.split(".")
    if not hmac.compare_digest(_sign(secret, payload), signature.lower()):
        raise TokenError(N_("bad signature"))
    try:
        claims = json.loads(_unb64(payload))
        user_id, issued, expires = claims["uid"], int(claims["iat"]), int(claims["exp"])
        session = int(claims.get("ses", issued))
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise TokenError(N_("malformed token")) from None     # OverflowError: int(Infinity), JSON allows it
    if claims.get("v") != VERSION or not isinstance(user_id, str) or not user_id:
        raise TokenError(N_("malformed token"))
    if expires < now:
        raise TokenError(N_("expired token"))
    if issued > now + CLOCK_SKEW:
        raise TokenError(N_("token issued in the future"))
    return Claims(user_id, issued, expires, min(session, issued))


def origin_allowed(origin, allowed) -> bool:
    """Exact scheme://host[:port] match; a browser always sends Origin on a websocket."""
    if not origin:
        return False
    origin = origin.rstrip("/").lower()
    return any(origin == item.rstrip("/").lower() for item in allowed)
