"""Tier a: crmsync/linking.py -- which record and user a call belongs to, now or when the CRM is back."""
from datetime import datetime, timezone

import pytest

from crmsync.linking import PENDING, Linker
from crmsync.models import Caller, CallRecord, LiveBatch, LiveUpdate, LookupResult, ModuleSpec, User

SALLY = User("u-sally", "sally", "Sally Bronsen", "101")
MAX = User("u-max", "max", "Max Jensen", "102")
ANNA = Caller("Contacts", "c-anna", "Anna O'Neil", None, SALLY, "phone_work", "+49 30 111111", "e164")
MODULES = {"Contacts": ModuleSpec("Contacts", "contacts", ("phone_work",), link_table="calls_contacts",
                                  link_column="contact_id"),
           "Accounts": ModuleSpec("Accounts", "accounts", ("phone_office",))}


class Directory:
    """Answers from a dict; ``down`` makes every call raise like an unreachable CRM."""

    def __init__(self, down=False):
        self.down, self.lookups = down, []

    def lookup(self, number):
        self._check()
        self.lookups.append(number)
        if number == "+4930111111":
            return LookupResult("found", number, "+4930111111", ANNA)
        if not number or number == "anonymous":
            return LookupResult("anonymous", number)
        return LookupResult("unknown", number)

    def user_by_extension(self, ext):
        self._check()
        return {"101": SALLY, "102": MAX}.get(ext)

    def _check(self):
        if self.down:
            raise ConnectionError("CRM database unavailable")


def record(direction="Inbound", number="+4930111111", **extra):
    return CallRecord(call_id="call-1", linkedid="1.1", uniqueid="1.1", direction=direction, number=number,
                      started_at=datetime(2026, 12, 6, tzinfo=timezone.utc), **extra)


def linker(directory=None):
    return Linker(directory or Directory(), MODULES, anonymous_account="virtual")


def test_no_answer_leaves_the_call_pending_not_on_the_virtual_account():
    rec = record()
    linker().link(rec, None)
    assert rec.lookup_status == PENDING and rec.parent_id is None and rec.assigned_user_id is None


@pytest.mark.parametrize("number, parent", [("+4930111111", ("Contacts", "c-anna")),
                                            ("+4930999999", ("Accounts", "virtual")),
                                            ("anonymous", ("Accounts", "virtual"))])
def test_a_pending_call_is_linked_when_written(number, parent):
    rec = record(number=number, lookup_status=PENDING)
    resolved = linker().resolve("start", rec)
    assert (resolved.parent_module, resolved.parent_id) == parent
    assert rec.lookup_status == PENDING and rec.parent_id is None      # the spooled copy is untouched
    if parent[0] == "Contacts":
        assert (resolved.link_table, resolved.link_column) == ("calls_contacts", "contact_id")
        assert resolved.assigned_user_id == "u-sally" and resolved.parent_name == "Anna O'Neil"
        assert resolved.lookup_status == "found"


def test_a_pending_outbound_call_belongs_to_the_caller_else_the_callee_owner():
    by_caller = linker().resolve("finish", record("Outbound", extension="102", lookup_status=PENDING))
    assert by_caller.assigned_user_id == "u-max" and by_caller.parent_id == "c-anna"
    no_user = linker().resolve("finish", record("Outbound", extension="555", lookup_status=PENDING))
    assert no_user.assigned_user_id == "u-sally"
    unknown = linker().resolve("finish", record("Outbound", number="+4930999999", lookup_status=PENDING))
    assert unknown.parent_id is None                                  # outbound: never the virtual account


def test_a_crm_still_down_raises_so_the_write_stays_queued():
    with pytest.raises(ConnectionError):
        linker(Directory(down=True)).resolve("start", record(lookup_status=PENDING))


def test_a_call_looked_up_in_time_is_not_looked_up_again():
    directory = Directory()
    rec = record(lookup_status="found", parent_module="Contacts", parent_id="c-anna")
    assert linker(directory).resolve("start", rec) == rec and directory.lookups == []


def test_the_answering_user_and_a_live_update_user_are_filled_in_late():
    finished = linker().resolve("finish", record(lookup_status="found", answered_extension="102"))
    assert finished.answered_user_id == "u-max"
    change = linker().resolve("live", LiveUpdate("call-1", "transferred", extension="101"))
    assert change.user_id == "u-sally"
    stranger = LiveUpdate("call-1", "transferred", extension="999")
    assert linker().resolve("live", stranger) is stranger


def test_each_update_of_a_live_batch_gets_its_user_filled_in_late():
    batch = LiveBatch.of([LiveUpdate("call-1", "answered", extension="102"),
                          LiveUpdate("call-1", "recording", path="/x.wav"),
                          LiveUpdate("call-1", "transferred", extension="101")])
    resolved = linker().resolve("live", batch)
    assert [u.user_id for u in resolved.updates] == ["u-max", None, "u-sally"]
    assert resolved.call_id == "call-1" and [u.kind for u in resolved.updates] == ["answered", "recording",
                                                                                    "transferred"]
