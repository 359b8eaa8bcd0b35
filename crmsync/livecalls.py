"""Effects of the live call model on a Call that the AGI side created.

Every update is idempotent: applying it twice, or after a reconnect replayed
the events of a call in progress, leaves the same rows.  An update for a call
crmagi has no row for (yet) changes nothing and says so (False).
"""
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from .calls import CRMAGI_CALLS, CallStore, _unavailable
from .models import LiveUpdate

KINDS = ("answered", "transferred", "recording", "attribution")


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class LiveCalls:
    def __init__(self, store: CallStore):
        self.store = store

    def apply(self, change: LiveUpdate) -> bool:
        if change.kind not in KINDS:
            raise ValueError("unknown live update %r" % change.kind)
        try:
            if not self.store._ready:
                self.store.ensure_tables()
            with self.store.engine.begin() as conn:
                row = conn.execute(select(CRMAGI_CALLS).where(CRMAGI_CALLS.c.call_id == change.call_id)
                                   .with_for_update()).mappings().first()
                if row is None:
                    return False
                getattr(self, "_" + change.kind)(conn, row, change, _now())
                return True
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc

    def _set(self, conn, call_id, now, **values):
        conn.execute(update(CRMAGI_CALLS).where(CRMAGI_CALLS.c.call_id == call_id)
                     .values(updated_at=now, **values))

    def _assign(self, conn, call_id, user_id, now):
        """The responsible user of the Call changes; every user who took part keeps a link."""
        calls = self.store.table("calls")
        conn.execute(update(calls).where(calls.c.id == call_id)
                     .values(assigned_user_id=user_id, date_modified=now))
        self.store.link_user(conn, call_id, user_id, now)

    def _answered(self, conn, row, change, now):
        if row["answered_extension"] is None:
            self._set(conn, row["call_id"], now, answered_extension=change.extension,
                      answered_user_id=change.user_id)
        if change.user_id and not row["transfer_user_id"]:
            self._assign(conn, row["call_id"], change.user_id, now)

    def _transferred(self, conn, row, change, now):
        if row["transfer_extension"] == change.extension and row["transfer_user_id"] == change.user_id:
            return            # the same transfer again (replayed events): nothing to change
        self._set(conn, row["call_id"], now, transfer_extension=change.extension,
                  transfer_user_id=change.user_id, transfers=(row["transfers"] or 0) + 1)
        if change.user_id:
            self._assign(conn, row["call_id"], change.user_id, now)

    def _recording(self, conn, row, change, now):
        if change.path and row["recording"] != change.path:
            self._set(conn, row["call_id"], now, recording=change.path)

    def _attribution(self, conn, row, change, now):
        values = {key: value for key, value in (("did", change.did), ("campaign", change.campaign),
                                                ("lead_source", change.lead_source),
                                                ("did_group", change.group)) if value}
        if any(row[key] != value for key, value in values.items()):
            self._set(conn, row["call_id"], now, **values)
