"""A SuiteCRM user's language, date/time format and time zone, from SuiteCRM's own preferences.

SuiteCRM keeps them in ``user_preferences`` (category ``global``, ``contents`` =
``base64_encode(serialize($array))``) under the keys ``language``, ``datef``, ``timef``
and ``timezone``; what a user never set comes from the site's config.php
(``default_language``, ``datef``/``timef``; no time zone means UTC), which crmagi
cannot read from the database: ``[crm] default_language``, ``date_format``,
``time_format`` and ``timezone`` name them (UserPreference::getDefaultPreference and
TimeDate::_getUserTZ in SuiteCRM 7.14.6).  Not to be confused with crmsync/userprefs.py,
crmagi's own per-user table.

Read per user and kept ``ttl`` seconds: a popup is rendered for many users at once, and a
user who changes their profile sees it in the next popup after that.  A CRM that cannot
be read gives the site's defaults: presentation never costs a popup.
"""
import base64
import binascii
import logging
import time
from dataclasses import dataclass, replace

from sqlalchemy import select

from .db import Schema
from .directory import _database_errors
from .phpserial import PhpSerialError, loads

log = logging.getLogger("crmagi.userlocale")
TABLE = "user_preferences"
_KEYS = {"language": "language", "datef": "date_format", "timef": "time_format", "timezone": "timezone"}
_MAX_KEEP = 5000


@dataclass(frozen=True)
class UserLocale:
    language: str = "en_us"          # a SuiteCRM language code: en_us, ru_RU, de_DE ...
    date_format: str = "m/d/Y"       # PHP date() letters
    time_format: str = "H:i"
    timezone: str = "UTC"            # an IANA zone name


def site_of(crm) -> UserLocale:
    """What users who set nothing in their SuiteCRM profile get: the [crm] settings naming
    config.php's defaults (``default_language``, ``date_format``, ``time_format``, ``timezone``)."""
    return UserLocale(crm.default_language, crm.date_format, crm.time_format, crm.timezone)


def from_preferences(contents, site: UserLocale) -> UserLocale:
    """The locale in one ``user_preferences.contents`` value, the site's where a key is unset (pure)."""
    try:
        prefs = loads(base64.b64decode(contents or b"", validate=False))
    except (PhpSerialError, binascii.Error, ValueError) as exc:
        log.warning("unreadable SuiteCRM preferences (%s): the site's defaults apply", exc)
        return site
    if not isinstance(prefs, dict):
        return site
    found = {field: prefs[key] for key, field in _KEYS.items()
             if isinstance(prefs.get(key), str) and prefs[key].strip()}
    return replace(site, **{field: value.strip() for field, value in found.items()})


class UserLocales:
    """``get(user_id)``: the user's UserLocale, from the CRM at most once per ``ttl`` seconds."""

    def __init__(self, engine, site: UserLocale, ttl=60.0, clock=time.monotonic):
        self.engine = engine
        self.site = site
        self.ttl = ttl
        self.clock = clock
        self._schema = Schema(engine, [TABLE])
        self._known = {}                 # user id -> (monotonic time, UserLocale)

    def get(self, user_id) -> UserLocale:
        now = self.clock()
        cached = self._known.get(user_id)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        try:
            found = self._read(user_id)
        except Exception as exc:     # noqa: BLE001 - language and dates are presentation only
            log.warning("cannot read the SuiteCRM preferences of user %s: %s", user_id, exc)
            return cached[1] if cached else self.site
        if len(self._known) >= _MAX_KEEP:
            self._known = {k: v for k, v in self._known.items() if now - v[0] < self.ttl}
        self._known[user_id] = (now, found)
        return found

    def _read(self, user_id):
        with _database_errors():
            table = self._schema.tables().get(TABLE)
            if table is None or not user_id:
                return self.site
            stmt = (select(table.c.contents)
                    .where(table.c.assigned_user_id == user_id, table.c.category == "global",
                           table.c.deleted == 0)
                    .order_by(table.c.date_modified.desc()).limit(1))
            with self.engine.connect() as conn:
                contents = conn.execute(stmt).scalar()
        return from_preferences(contents, self.site) if contents else self.site
