"""Effects of the live call model on a Call that the AGI side created.

Every update is idempotent: applying it twice, or after a reconnect replayed
the events of a call in progress, leaves the same rows.  An update for a call
crmagi has no row for (yet) changes nothing and says so (False).
"""
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError

from . import sqlbatch
from .calls import CRMAGI_CALLS, CallStore, _driver_errors, _fit, _unavailable
from .models import LiveUpdate

KINDS = ("answered", "transferred", "recording", "attribution")
_READ = "SELECT * FROM `crmagi_calls` WHERE `call_id` = %s FOR UPDATE"


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class LiveCalls:
    """Each update: the call's row read and locked (one round trip), then its writes and the
    COMMIT (one more, on MariaDB; crmsync/sqlbatch.py)."""

    def __init__(self, store: CallStore):
        self.store = store
        self._errors = _driver_errors(store.engine)

    def apply(self, change: LiveUpdate) -> bool:
        if change.kind not in KINDS:
            raise ValueError("unknown live update %r" % change.kind)
        try:
            if not self.store._ready:
                self.store.ensure_tables()
            with sqlbatch.transaction(self.store.engine) as tx:
                rows = tx.read(_READ, (change.call_id,), names=True)
                if not rows:
                    return False
                statements = []
                getattr(self, "_" + change.kind)(statements, rows[0], change, _now())
                if statements:
                    tx.commit(statements)
                return True
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        except self._errors as exc:
            raise _unavailable(exc) from exc

    def _set(self, statements, call_id, now, **values):
        values["updated_at"] = now
        statements.append(sqlbatch.update("crmagi_calls", _fit(CRMAGI_CALLS, values), "call_id", call_id))

    def _assign(self, statements, call_id, user_id, now):
        """The responsible user of the Call changes; every user who took part keeps a link."""
        self.store.table("calls")
        statements.append(sqlbatch.update("calls", {"assigned_user_id": user_id, "date_modified": now},
                                          "id", call_id))
        statements.append(self.store.link_user_statement(call_id, user_id, now))

    def _answered(self, statements, row, change, now):
        if row["answered_extension"] is None:
            self._set(statements, row["call_id"], now, answered_extension=change.extension,
                      answered_user_id=change.user_id)
        if change.user_id and not row["transfer_user_id"]:
            self._assign(statements, row["call_id"], change.user_id, now)

    def _transferred(self, statements, row, change, now):
        if row["transfer_extension"] == change.extension and row["transfer_user_id"] == change.user_id:
            return            # the same transfer again (replayed events): nothing to change
        self._set(statements, row["call_id"], now, transfer_extension=change.extension,
                  transfer_user_id=change.user_id, transfers=(row["transfers"] or 0) + 1)
        if change.user_id:
            self._assign(statements, row["call_id"], change.user_id, now)

    def _recording(self, statements, row, change, now):
        if change.path and row["recording"] != change.path:
            self._set(statements, row["call_id"], now, recording=change.path)

    def _attribution(self, statements, row, change, now):
        values = {key: value for key, value in (("did", change.did), ("campaign", change.campaign),
                                                ("lead_source", change.lead_source),
                                                ("did_group", change.group)) if value}
        if any(row[key] != value for key, value in values.items()):
            self._set(statements, row["call_id"], now, **values)
