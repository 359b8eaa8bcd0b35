"""What crmagi keeps about CRM users beyond SuiteCRM's own columns (`crmagi users`).

SuiteCRM has one phone field per user; people have a desk phone and a softphone, and
log in to queues as app_agent_pool agents.  ``devices`` and ``agents`` are more
extensions of the same user: calls ringing any of them pop up for that user, and a
transfer to one reaches that user.  ``popups`` off keeps one user's screen quiet
(a supervisor who listens to many queues).  ``last_seen_at`` is when a CRM tab of the
user last connected to crmagi.  One row per user in the tenant's database, so every
crmagi box sees the same.
"""
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, Optional, Tuple

import gevent
from sqlalchemy import Boolean, CHAR, Column, DateTime, MetaData, String, Table, insert, inspect, select, update

log = logging.getLogger("crmagi.users")

_META = MetaData()
# crmagi's own table (SuiteCRM's tables are only ever reflected).
CRMAGI_USERS = Table(
    "crmagi_users", _META,
    Column("user_id", CHAR(36), primary_key=True),
    Column("devices", String(255), nullable=False, default=""),
    Column("agents", String(255), nullable=False, default=""),
    Column("popups", Boolean, nullable=False, default=True),
    Column("last_seen_at", DateTime),
    mysql_engine="InnoDB",
)
_EXTENSION = re.compile(r"^[0-9A-Za-z*#+_.-]{1,32}$")


@dataclass(frozen=True)
class Prefs:
    devices: Tuple[str, ...] = ()
    agents: Tuple[str, ...] = ()
    popups: bool = True
    last_seen_at: Optional[datetime] = None


def parse_extensions(text, what) -> Tuple[str, ...]:
    """"201, 202" -> ("201", "202"); ValueError names the bad one."""
    values = tuple(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))
    for value in values:
        if not _EXTENSION.match(value):
            raise ValueError("--%s: %r is not an extension" % (what, value[:40]))
    return values


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class UserPrefs:
    def __init__(self, engine):
        self.engine = engine

    def ensure_table(self):
        CRMAGI_USERS.create(self.engine, checkfirst=True)

    def load(self) -> Dict[str, Prefs]:
        """Every user's prefs; {} when the table does not exist yet (nobody set any)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(CRMAGI_USERS.name):
                return {}
            rows = conn.execute(select(CRMAGI_USERS)).all()
        return {row.user_id: Prefs(tuple(filter(None, row.devices.split(","))),
                                   tuple(filter(None, row.agents.split(","))), bool(row.popups),
                                   row.last_seen_at) for row in rows}

    def set(self, user_id, devices=None, agents=None, popups=None):
        """Change what is given (None: keep)."""
        self.ensure_table()
        values = {key: value for key, value in (("devices", None if devices is None else ",".join(devices)),
                                                 ("agents", None if agents is None else ",".join(agents)),
                                                 ("popups", popups)) if value is not None}
        self._upsert(user_id, values)

    def seen(self, user_id):
        self._upsert(user_id, {"last_seen_at": _now()})

    def _upsert(self, user_id, values):
        with self.engine.begin() as conn:
            done = conn.execute(update(CRMAGI_USERS).where(CRMAGI_USERS.c.user_id == user_id).values(**values))
            if done.rowcount == 0 and values:
                row = {"devices": "", "agents": "", "popups": True}
                row.update(values)
                conn.execute(insert(CRMAGI_USERS).values(user_id=user_id, **row))


class SeenRecorder:
    """``last_seen_at`` of a user whose tab connected: written at most once a minute per user,
    in its own greenlet (a tab's admission never waits on the database)."""

    def __init__(self, prefs, every=60.0, clock=None):
        self.prefs, self.every = prefs, every
        self.clock = clock or time.monotonic
        self.written = {}

    def __call__(self, user_id):
        now = self.clock()
        if now - self.written.get(user_id, -self.every) < self.every:
            return
        self.written[user_id] = now
        gevent.spawn(self._write, user_id)

    def _write(self, user_id):
        try:
            self.prefs.seen(user_id)
        except Exception as exc:     # noqa: BLE001 - last seen is a convenience, never a failure
            log.debug("cannot record last seen of %s: %s", user_id, exc)
