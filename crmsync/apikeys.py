"""API keys of the plugin API: created once, stored as scrypt hashes, revocable.

A key reads ``crmagi_<key id>_<secret>``.  Only the key id (to find the row) and an
scrypt hash of the secret are stored, in the tenant's own database, so every crmagi
box of that tenant accepts the same keys and a revocation reaches them all.  The key
itself is printed once by `crmagi keys create` and never again.

scrypt (hashlib, the standard library) rather than a fast hash: a dump of this table
must not let anyone try secrets at GPU speed.  Verifying costs ~50 ms of CPU, once per
plugin connection, never per message.
"""
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import List, Optional, Tuple

from sqlalchemy import CHAR, Column, DateTime, MetaData, String, Table, insert, select, update

SCOPES = ("events", "lookup", "originate")
PREFIX = "crmagi_"
_KEY = re.compile(r"^crmagi_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
# scrypt cost: N=2**14, r=8, p=1 takes 16 MB and ~50 ms here (RFC 7914's interactive figure).
_N, _R, _P = 2 ** 14, 8, 1

_META = MetaData()
# crmagi's own table (SuiteCRM's tables are only ever reflected).
API_KEYS = Table(
    "crmagi_api_keys", _META,
    Column("key_id", CHAR(16), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("label", String(100), nullable=False),
    Column("scopes", String(100), nullable=False),
    Column("hash", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
    Column("revoked_at", DateTime),
    mysql_engine="InnoDB",
)


class ApiKeyError(ValueError):
    """Why a key or a request about keys was refused; the message is what the caller is told."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    label: str
    scopes: Tuple[str, ...]
    created_at: datetime
    last_used_at: Optional[datetime]
    revoked_at: Optional[datetime]


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def parse_scopes(text) -> Tuple[str, ...]:
    """"events,lookup" -> ("events", "lookup"); unknown or no scope is an error naming it."""
    scopes = tuple(sorted({part.strip() for part in (text or "").split(",") if part.strip()}))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise ApiKeyError("scope %s: choose from %s" % (",".join(unknown) or "(none)", ",".join(SCOPES)))
    return scopes


def hash_secret(secret: str, salt: bytes) -> str:
    digest = hashlib.scrypt(secret.encode("ascii"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (_N, _R, _P, salt.hex(), digest.hex())


def check_secret(secret: str, stored: str) -> bool:
    try:
        name, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(secret.encode("ascii"), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                                  p=int(p), dklen=len(digest) // 2)
    except (ValueError, UnicodeEncodeError):
        return False
    return name == "scrypt" and hmac.compare_digest(computed.hex(), digest)


def split_key(key) -> Tuple[str, str]:
    """(key id, secret) of a well-formed key, else ApiKeyError."""
    match = _KEY.match(key) if isinstance(key, str) else None
    if match is None:
        raise ApiKeyError("malformed key")
    return match.group(1), match.group(2)


def _row_key(row) -> ApiKey:
    return ApiKey(row.key_id, row.tenant, row.label, tuple(row.scopes.split(",")), row.created_at,
                  row.last_used_at, row.revoked_at)


class KeyStore:
    """The keys of one tenant, in that tenant's database."""

    def __init__(self, engine, tenant):
        self.engine, self.tenant = engine, tenant

    def ensure_table(self):
        API_KEYS.create(self.engine, checkfirst=True)

    def create(self, label, scopes) -> Tuple[ApiKey, str]:
        """The new key's row and the key itself (shown once)."""
        label = (label or "").strip()
        if not label or len(label) > 100:
            raise ApiKeyError("--name: 1 to 100 characters")
        scopes = parse_scopes(",".join(scopes) if isinstance(scopes, (list, tuple)) else scopes)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        values = dict(key_id=key_id, tenant=self.tenant, label=label, scopes=",".join(scopes),
                      hash=hash_secret(secret, secrets.token_bytes(16)), created_at=_now())
        self.ensure_table()
        with self.engine.begin() as conn:
            conn.execute(insert(API_KEYS).values(**values))
        return ApiKey(key_id, self.tenant, label, scopes, values["created_at"], None, None), \
            PREFIX + key_id + "_" + secret

    def list(self) -> List[ApiKey]:
        self.ensure_table()
        with self.engine.connect() as conn:
            rows = conn.execute(select(API_KEYS).where(API_KEYS.c.tenant == self.tenant)
                                .order_by(API_KEYS.c.created_at, API_KEYS.c.key_id))
            return [_row_key(row) for row in rows]

    def revoke(self, key_id) -> bool:
        """True if the key existed and was active; revoked keys' sockets close (plugin server)."""
        with self.engine.begin() as conn:
            done = conn.execute(update(API_KEYS).where(API_KEYS.c.key_id == key_id,
                                                       API_KEYS.c.tenant == self.tenant,
                                                       API_KEYS.c.revoked_at.is_(None))
                                .values(revoked_at=_now()))
            return done.rowcount == 1

    def verify(self, key, check=check_secret) -> ApiKey:
        """The active key of this tenant that ``key`` is, else ApiKeyError (one message for
        unknown, wrong secret and other tenant: a prober learns nothing).  ``check``: how
        the secret is checked against the hash (the server runs it in a thread)."""
        key_id, secret = split_key(key)
        with self.engine.connect() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.key_id == key_id)).first()
        if row is None or row.tenant != self.tenant or not check(secret, row.hash):
            raise ApiKeyError("unknown key")
        if row.revoked_at is not None:
            raise ApiKeyError("revoked key")
        with self.engine.begin() as conn:
            conn.execute(update(API_KEYS).where(API_KEYS.c.key_id == key_id).values(last_used_at=_now()))
        return _row_key(row)

    def revoked_among(self, key_ids) -> List[str]:
        """Which of these key ids are revoked (or gone): their sockets must close."""
        if not key_ids:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(API_KEYS.c.key_id).where(API_KEYS.c.key_id.in_(list(key_ids)),
                                                                 API_KEYS.c.revoked_at.is_(None)))
            active = {row.key_id for row in rows}
        return [key_id for key_id in key_ids if key_id not in active]
