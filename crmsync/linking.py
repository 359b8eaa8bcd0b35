"""Which CRM record and which user a call belongs to, decided once for every write path.

The rules (``link``) are pure.  ``resolve`` is what makes a call taken during a CRM
outage end up exactly where it would have if the CRM had answered: the AGI answers
the dialplan without the CRM (CRM_STATUS=error) and marks the call ``pending``; no
parent is chosen then -- the virtual account is for callers without a usable number,
not for callers we could not look up.  Just before the write is applied (late in the
same process, from the spool, after a restart) the number is looked up again and the
call is linked, assigned and named from the answer.  A lookup that fails raises, so
the write stays queued and is tried again later.
"""
import dataclasses
from typing import Mapping, Optional

from .models import CallRecord, LiveBatch, LiveUpdate, LookupResult, ModuleSpec

PENDING = "pending"        # lookup_status of a call whose lookup did not answer in time


@dataclasses.dataclass
class Linker:
    directory: object                         # lookup(number), user_by_extension(ext)
    modules: Mapping[str, ModuleSpec]
    anonymous_account: str = ""

    def link(self, record: CallRecord, result: Optional[LookupResult]) -> None:
        """Apply a lookup's answer to ``record``; None (no answer) leaves it pending."""
        if result is None:
            record.lookup_status = PENDING
            return
        caller = result.caller
        if caller:
            spec = self.modules.get(caller.module)
            record.parent_module, record.parent_id, record.parent_name = (
                caller.module, caller.record_id, caller.name)
            record.link_table = getattr(spec, "link_table", "") or ""
            record.link_column = getattr(spec, "link_column", "") or ""
            if record.direction == "Inbound" and caller.owner:
                record.assigned_user_id = caller.owner.id
        elif record.direction == "Inbound" and self.anonymous_account:
            record.parent_module, record.parent_id = "Accounts", self.anonymous_account
        record.lookup_status = result.status

    def assign_outbound(self, record: CallRecord, user, result: Optional[LookupResult]) -> None:
        """An outbound call belongs to the user who dialled, else to the callee's owner."""
        if user is not None:
            record.assigned_user_id = user.id
        elif not record.assigned_user_id and result and result.caller and result.caller.owner:
            record.assigned_user_id = result.caller.owner.id

    def resolve(self, kind, op):
        """The op as it must be written now: a copy with what the CRM could not tell in time
        filled in.  Raises when the CRM still cannot answer (the op stays spooled)."""
        if isinstance(op, LiveBatch):
            return dataclasses.replace(op, updates=tuple(self.resolve(kind, one) for one in op.updates))
        if isinstance(op, LiveUpdate):
            if op.extension and not op.user_id:
                user = self.directory.user_by_extension(op.extension)
                return dataclasses.replace(op, user_id=user.id) if user else op
            return op
        record = dataclasses.replace(op)
        if record.lookup_status == PENDING:
            result = self.directory.lookup(record.number or "")
            self.link(record, result)
            if record.direction == "Outbound":
                user = self.directory.user_by_extension(record.extension) if record.extension else None
                self.assign_outbound(record, user, result)
        if record.direction == "Inbound" and record.answered_extension and not record.answered_user_id:
            user = self.directory.user_by_extension(record.answered_extension)
            record.answered_user_id = user.id if user else None
        return record
