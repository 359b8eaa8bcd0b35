"""Effects of the live call model on a Call that the AGI side created.

Every update is idempotent: applying it twice, or after a reconnect replayed
the events of a call in progress, leaves the same rows.  An update for a call
crmagi has no row for (yet) changes nothing and says so (False).
"""
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError

from . import groupcommit
from .calls import CRMAGI_CALLS, CallStore, _driver_errors, _fit, _unavailable
from .models import LiveBatch

KINDS = ("answered", "transferred", "recording", "attribution")


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


class _Sql:
    """The conditions of the updates, in the engine's dialect."""

    def __init__(self, dialect):
        self.dialect = q = dialect
        self.lock = "SELECT 1 FROM %s%s WHERE %s = %%s%s" % (
            q.quote("crmagi_calls"), q.lock_hint, q.quote("call_id"), q.lock_suffix)
        self.not_transferred = self.call("(%s IS NULL OR %s = '')" % (q.quote("transfer_user_id"),
                                                                       q.quote("transfer_user_id")))
        self.count_transfer = ", %s = COALESCE(%s, 0) + 1 WHERE " % (q.quote("transfers"), q.quote("transfers"))

    def call(self, condition):
        """SQL true when crmagi's row of the call (the next parameter) meets ``condition``."""
        return "EXISTS (SELECT 1 FROM %s WHERE %s = %%s AND %s)" % (
            self.dialect.quote("crmagi_calls"), self.dialect.quote("call_id"), condition)

    def same(self, columns):
        """SQL true when the call's row already holds these values (NULL-safe)."""
        return " AND ".join(self.dialect.same(column) for column in columns)


class LiveCalls:
    """Each update is ONE round trip on MariaDB and SQL Server (crmsync/sqlbatch.py): the call's
    row locked (``FOR UPDATE``, UPDLOCK on SQL Server; which also says whether crmagi has the
    call), then statements whose
    WHERE clauses hold the rules (set the answering extension once, skip a transfer seen
    before, ...), then the COMMIT.  The lock comes first, so the conditions read the row as
    the other writers of this call (the finish, other updates) left it."""

    def __init__(self, store: CallStore):
        self.store = store
        self._errors = _driver_errors(store.engine)
        self._sql = _Sql(store.dialect)

    def apply(self, change) -> bool:
        """A LiveUpdate, or a LiveBatch of one call's updates: all in one transaction, in
        order (each statement's conditions see the row as the ones before left it)."""
        changes = change.updates if isinstance(change, LiveBatch) else (change,)
        for one in changes:
            if one.kind not in KINDS or one.call_id != change.call_id:
                raise ValueError("unknown live update %r of call %s" % (one.kind, one.call_id))
        try:
            if not self.store._ready:
                self.store.ensure_tables()
            statements, now = [(self._sql.lock, (change.call_id,))], _now()
            for one in changes:
                getattr(self, "_" + one.kind)(statements, one, now)
            # The lock's rows say whether crmagi has the call; with other calls' writes when
            # they queue (crmsync/groupcommit.py).
            return bool(self.store.group.run(groupcommit.Op(
                (change.call_id,), (), lambda sets: (statements, None), probe=True)))
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        except self._errors as exc:
            raise _unavailable(exc) from exc

    def _set(self, statements, call_id, now, unless, unless_params, **values):
        """crmagi_calls gets ``values`` (and updated_at) unless the SQL ``unless`` holds."""
        values = dict(_fit(CRMAGI_CALLS, values), updated_at=now)
        sql, params = self.store.update("crmagi_calls", values, "call_id", call_id)
        statements.append((sql + " AND NOT (%s)" % unless, params + tuple(unless_params)))

    def _assign(self, statements, call_id, user_id, now, when, when_params):
        """The responsible user of the Call changes when the SQL ``when`` holds; every user who
        took part keeps a link."""
        self.store.table("calls")
        sql, params = self.store.update("calls", {"assigned_user_id": user_id, "date_modified": now}, "id", call_id)
        statements.append((sql + " AND " + when, params + tuple(when_params)))
        sql, params = self.store.link_user_statement(call_id, user_id, now)
        statements.append((sql + " AND " + when, params + tuple(when_params)))

    def _answered(self, statements, change, now):
        call_id = change.call_id
        self._set(statements, call_id, now, "%s IS NOT NULL" % self._sql.dialect.quote("answered_extension"), (),
                  answered_extension=change.extension, answered_user_id=change.user_id)
        if change.user_id:
            self._assign(statements, call_id, change.user_id, now, self._sql.not_transferred, (call_id,))

    def _transferred(self, statements, change, now):
        # The same transfer again (replayed events) changes nothing; the assignment reads the
        # transfer columns before the update below changes them.
        same = self._sql.same(("transfer_extension", "transfer_user_id"))
        seen = (change.extension, change.user_id)
        if change.user_id:
            self._assign(statements, change.call_id, change.user_id, now, self._sql.call("NOT (%s)" % same),
                         (change.call_id,) + seen)
        values = dict(_fit(CRMAGI_CALLS, {"transfer_extension": change.extension,
                                          "transfer_user_id": change.user_id}), updated_at=now)
        sql, params = self.store.update("crmagi_calls", values, "call_id", change.call_id)
        sql = sql.replace(" WHERE ", self._sql.count_transfer, 1)
        statements.append((sql + " AND NOT (%s)" % same, params + seen))

    def _recording(self, statements, change, now):
        if change.path:
            self._set(statements, change.call_id, now, self._sql.same(("recording",)), (change.path,),
                      recording=change.path)

    def _attribution(self, statements, change, now):
        values = {key: value for key, value in (("did", change.did), ("campaign", change.campaign),
                                                ("lead_source", change.lead_source),
                                                ("did_group", change.group)) if value}
        if values:
            self._set(statements, change.call_id, now, self._sql.same(values), tuple(values.values()), **values)
