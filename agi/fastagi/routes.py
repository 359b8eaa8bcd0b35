"""Call-flow handlers for the FastAGI scripts ``incoming``, ``outgoing`` and ``hangup``.

A handler gets the session (already holding the agi_* env) and a ``CallFlow``
with its collaborators injected.  It answers the dialplan first (variables
set, socket closed: Asterisk moves on at once) and writes the Call after, so a
slow CRM never holds a call longer than ``[agi] timeout``.
"""
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import gevent
from gevent.pool import Pool

from crmsync.linking import PENDING, Linker
from crmsync.models import CallRecord, Caller, LookupResult

from agi.fastagi import callstate, ended

from agi.ami import clickmark

log = logging.getLogger("crmagi.routes")

# The public dialplan contract (documented in README.rst).
CONTRACT = ("CRM_STATUS", "CRM_MODULE", "CRM_RECORD_ID", "CRM_RECORD_NAME",
            "CRM_OWNER_USER_ID", "CRM_OWNER_EXTEN", "CRM_CALL_ID")
ROUND_TRIP_ALLOWANCE = 0.05   # seconds kept for setting variables after the lookup


@dataclass
class CallFlow:
    directory: object                    # lookup(number), user(id), user_by_extension(ext)
    writer: object                       # submit(kind, CallRecord) -> bool
    call_id_for: Callable[[str, str], str]
    linker: Linker                       # which record and user a call belongs to
    timeout: float = 0.5
    set_callerid_name: bool = True
    log_internal: bool = False
    internal_max_digits: int = 5
    system_name: str = ""
    late_lookup_wait: float = 5.0
    lookups: Pool = field(default_factory=lambda: Pool(200))
    collecting: set = field(default_factory=set)     # AstDB keys being collected (agi/fastagi/ended.py)
    lookups_failing: bool = False                    # inside a streak of failed lookups
    clock: Callable[[], float] = time.monotonic
    click_secret: str = ""                           # checks click-to-call marks (agi/ami/clickmark.py)
    ended_family: str = ended.FAMILY                 # AstDB family of calls ended while crmagi was down
    notify: Callable[..., None] = lambda *a, **k: None     # (kind, CallRecord, LookupResult, rings=)
    # Whether this Asterisk sets variables through ARRAY() (func_strings.so): None until the
    # first answer has checked it, False: one SET VARIABLE per variable from then on.
    array_set: Optional[bool] = None

    # -- lookup with a deadline ------------------------------------------
    def start_lookup(self, func, *args):
        """Run a CRM read in its own greenlet: a late one is not killed mid-query."""
        if self.lookups.full():
            log.warning("lookup pool full (%d): answering without the CRM", self.lookups.size)
            return None
        return self.lookups.spawn(_quietly, func, *args)

    def wait_lookup(self, job, deadline):
        if job is None:
            return None
        job.join(timeout=max(0.0, deadline - self.clock()))
        return self.value_of(job)

    def value_of(self, job):
        """The lookup's answer if it has one by now, else None; failures logged once per outage."""
        if not job.ready():
            return None
        value = job.value
        if isinstance(value, _Failed):
            if not self.lookups_failing:
                self.lookups_failing = True
                log.warning("CRM lookup failed: %s; answering CRM_STATUS=error until lookups work", value.error)
            return None
        if self.lookups_failing:
            self.lookups_failing = False
            log.info("CRM lookups work again")
        return value


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


def _quietly(func, *args):
    """A greenlet that raises makes gevent print a traceback: during a CRM outage that is one
    per call (600,000 log lines in a 10-minute fault campaign).  Return the failure instead."""
    try:
        return func(*args)
    except Exception as exc:    # noqa: BLE001 - reported by value_of
        return _Failed(exc)


def _now():
    return datetime.now(timezone.utc)


def _lookup_vars(result: Optional[LookupResult], call_id):
    if result is None:
        status = "error"
    else:
        status = result.status
    values = dict.fromkeys(CONTRACT, "")
    values.update(CRM_STATUS=status, CRM_CALL_ID=call_id)
    caller = result.caller if result else None
    if caller:
        values.update(CRM_MODULE=caller.module, CRM_RECORD_ID=caller.record_id, CRM_RECORD_NAME=caller.name)
        if caller.owner:
            values.update(CRM_OWNER_USER_ID=caller.owner.id, CRM_OWNER_EXTEN=caller.owner.extension or "")
    return values


def _cnam(value):
    """Asterisk says "unknown" when the network sent no name."""
    return value if value and value.lower() != "unknown" else None


LINKEDID = "${CHANNEL(linkedid)}"


def _linkedid(session, value=None):
    """The call's linkedid: ``value`` as read already, else read now; the uniqueid without one."""
    if value is None:
        value = session.get_full_variable(LINKEDID)
    return value or session.env.get("uniqueid", "")


MAX_VALUE = 255          # Asterisk reads at most 2047 bytes per command line


def _answer(session, values, result, flow, record):
    """The contract's variables, the caller's name and CRM_CALL (the hangup request's start of
    the call), set in one command where they fit (protocol.set_variables)."""
    values = {name: value[:MAX_VALUE] for name, value in values.items()}
    caller = result.caller if result else None
    if caller and flow.set_callerid_name and caller.name:
        values["CALLERID(name)"] = caller.name[:80]
    values["CRM_CALL"] = callstate.pack(record)
    session.set_variables(values, combined=flow.array_set is not False)
    if flow.array_set is None:
        _check_array_set(session, flow, values)


def _check_array_set(session, flow, values):
    """Once per process: read back what ARRAY() set.  Without func_strings.so loaded Asterisk
    answers ``200 result=1`` and sets nothing, and every call would go unrouted."""
    flow.array_set = session.get_full_variable("${CRM_CALL_ID}") == values["CRM_CALL_ID"]
    if not flow.array_set:
        log.error("Asterisk did not set the variables of SET VARIABLE ARRAY(...) (is func_strings.so "
                  "loaded?): setting them with one command each from now on")
        session.set_variables(values, combined=False)


def user_for_extension(directory, extension):
    """The CRM user of an extension, or None; never raises (used after the socket is closed)."""
    try:
        return directory.user_by_extension(extension)
    except Exception as exc:    # the CRM is down: the spool keeps the rest of the record
        log.warning("cannot map extension %s to a user: %s", extension, exc)
        return None


def _deadline(flow, accepted_at):
    """When the lookup must have answered, leaving time to set the variables."""
    return accepted_at + flow.timeout - min(ROUND_TRIP_ALLOWANCE, flow.timeout / 5)


def _reply_then_write(session, flow, job, record, result):
    """Answer the dialplan and close (Asterisk moves on), then give a late lookup more
    time and write the start of the call."""
    _answer(session, _lookup_vars(result, record.call_id), result, flow, record)
    session.close()
    write_start(flow, job, record, result)


def write_start(flow, job, record, result, **notes):
    """After the caller is answered: tell the popups, give a late lookup more time, write
    the start of the call.  Also the plugin API's (agi/plugin/calls.py) ``start``."""
    if record.direction == "Inbound":
        flow.notify("ringing", record, result, **notes)
    if record.lookup_status == PENDING and job is not None:
        # A late answer is used at once; without one the writer looks the number up
        # again when the CRM is back (crmsync/linking.py), never the virtual account.
        job.join(timeout=flow.late_lookup_wait)
        late = flow.value_of(job)
        if late is not None:
            flow.linker.link(record, late)
            if record.direction == "Outbound":
                flow.linker.assign_outbound(record, None, late)
    flow.writer.submit("start", record)


def incoming(session, flow: CallFlow, accepted_at: float):
    env = session.env
    deadline = _deadline(flow, accepted_at)
    number = callstate.clean(env.get("callerid"))
    job = flow.start_lookup(flow.directory.lookup, number)
    linkedid = _linkedid(session)
    call_id = flow.call_id_for(flow.system_name, linkedid)
    result = flow.wait_lookup(job, deadline)
    record = CallRecord(call_id=call_id, linkedid=linkedid, uniqueid=env.get("uniqueid", ""),
                        direction="Inbound", number=number, started_at=_now(),
                        did=env.arg(1) or callstate.clean(env.get("dnid")) or env.get("extension"),
                        caller_name=_cnam(env.get("calleridname")))
    flow.linker.link(record, result)
    _reply_then_write(session, flow, job, record, result)


def _linkedid_and_mark(session, flow, dialled):
    """The call's linkedid and the click-to-call mark crmagi's own Originate put on this
    channel when it is valid and for this number (None for every other outbound call, and
    without a [webpush] secret): one command."""
    if not flow.click_secret:
        return _linkedid(session), None
    linkedid, text = session.get_full_variables((LINKEDID, "${%s}" % clickmark.VARIABLE))
    return _linkedid(session, linkedid), valid_mark(flow.click_secret, text, dialled, time.time())


def valid_mark(secret, text, dialled, now):
    """The mark ``text`` when it is crmagi's, unexpired and for the number dialled, else None
    (also the plugin API's ``click`` of a call crmagi asked its PBX to place)."""
    mark = clickmark.verify(secret, text, now) if secret and text else None
    digits = "".join(c for c in dialled if c.isdigit())
    return mark if mark is not None and mark.number.lstrip("+") == digits else None


def clicked(mark, dialled):
    """The record the user clicked, as the lookup's answer (checked by crmagi when placing the call)."""
    caller = Caller(module=mark.module, record_id=mark.record_id, name=mark.record_name, account_name=None,
                    owner=None, column="", stored_number=mark.number, rule="click")
    return LookupResult("found", dialled, caller=caller, explain=("click-to-call on this record",))


def internal_call(flow, dialled):
    """An outbound call to an internal extension, which crmagi does not log (unless
    [agi] log_internal); also the CDR backfill's rule (agi/cdr/calls.py)."""
    return len([c for c in dialled if c.isdigit()]) <= flow.internal_max_digits and not flow.log_internal


def outgoing(session, flow: CallFlow, accepted_at: float):
    env = session.env
    deadline = _deadline(flow, accepted_at)
    dialled = env.arg(1) or env.get("extension", "")
    if internal_call(flow, dialled):
        session.set_variable("CRM_STATUS", "internal")
        session.close()
        return
    linkedid, mark = _linkedid_and_mark(session, flow, dialled)
    # A click-to-call shows the callee on the user's phone; the user is in the mark.
    extension = mark.extension if mark else callstate.clean(env.get("callerid"))
    job = None if mark and mark.record_id else flow.start_lookup(flow.directory.lookup, dialled)
    user_job = flow.start_lookup(flow.directory.user_by_extension, extension) if extension and not mark else None
    call_id = flow.call_id_for(flow.system_name, linkedid)
    result = clicked(mark, dialled) if job is None else flow.wait_lookup(job, deadline)
    user = flow.wait_lookup(user_job, deadline)
    record = CallRecord(call_id=call_id, linkedid=linkedid, uniqueid=env.get("uniqueid", ""),
                        direction="Outbound", number=dialled, extension=extension, started_at=_now())
    flow.linker.link(record, result)
    flow.linker.assign_outbound(record, user, result)
    if mark is not None:
        record.assigned_user_id = mark.user_id
    _reply_then_write(session, flow, job, record, result)


HANGUP_VARS = ("CRM_CALL", "DIALSTATUS", "ANSWEREDTIME", "DIALEDTIME",
               "DIALEDPEERNUMBER", "MEMBERINTERFACE", "MIXMONITOR_FILENAME", "HANGUPCAUSE")
HANGUP_READS = tuple("${%s}" % name for name in HANGUP_VARS)


def hangup(session, flow: CallFlow, accepted_at: float):
    """Runs from a hangup handler on a dead channel (GET/SET VARIABLE and DATABASE work there).

    The end of the call is made durable (written ahead) before ``CRM_HANGUP=done`` tells
    the include not to keep it in AstDB: a crmagi killed at any point of this request
    loses nothing -- at worst the end is applied twice, which changes nothing."""
    # One command reads the variables and the AstDB keys of calls that ended while crmagi was down.
    *read, keys = session.get_full_variables(HANGUP_READS + (ended.keys_expression(flow.ended_family),))
    values = dict(zip(HANGUP_VARS, read))
    record = end_of_call(values, lambda: _rebuild_from_channel(session, flow))
    _collect_ended(session, flow, keys)
    ticket = None if record is None else flow.writer.begin("finish", record)
    if ticket is None or ticket.durable:
        session.set_variable(ended.DONE_VARIABLE, "done")
    session.close()
    if record is None:
        log.warning("hangup for %s: no CRM_CALL and no CRM_DIRECTION on the channel; not a crmagi call",
                    session.env.get("uniqueid"))
        return
    gevent.spawn(flow.notify, "ended", record, None)
    flow.writer.complete(ticket)


def _rebuild_from_channel(session, flow):
    """The start request never ran (crmagi was down: AGISTATUS=FAILURE), but the dialplan
    include set CRM_DIRECTION and CRM_DID/CRM_DIALED: rebuild the start of the call."""
    direction = session.get_variable("CRM_DIRECTION")
    if direction not in ("Inbound", "Outbound"):
        return None
    env = session.env
    target = session.get_variable("CRM_DID" if direction == "Inbound" else "CRM_DIALED")
    return rebuild(flow, direction, _linkedid(session), env.get("uniqueid", ""), env.get("callerid"), target)


def rebuild(flow, direction, linkedid, uniqueid, callerid, target):
    """The start of a call whose start request never ran (also a plugin call whose ``start``
    was lost).  ``target``: the DID of an inbound call, the dialled number of an outbound one."""
    if direction not in ("Inbound", "Outbound"):
        return None
    if direction == "Inbound":
        number, did, extension = callstate.clean(callerid), target or None, None
    else:
        number, did, extension = target or "", None, callstate.clean(callerid)
    log.info("call %s ends without a start record: rebuilding its start", linkedid)
    # The lookup is left to the writer (PENDING), which runs it when the CRM answers.
    return CallRecord(call_id=flow.call_id_for(flow.system_name, linkedid), linkedid=linkedid,
                      uniqueid=uniqueid, direction=direction, number=number, did=did,
                      extension=extension, started_at=_now(), lookup_status=PENDING)


def _collect_ended(session, flow, keys_text):
    """Finish the calls whose own hangup request found crmagi down (agi/fastagi/ended.py): each is
    spooled (durable) before its AstDB entry is deleted.  ``keys_text``: the family's DB_KEYS as
    the request read them.  Never fails this request."""
    keys = []
    try:
        listed = ended.parse_keys(keys_text)
        # Concurrent hangup requests after a restart see the same keys: each takes others.
        keys = [key for key in listed if key not in flow.collecting][:ended.PER_REQUEST]
        flow.collecting.update(keys)
        for key in keys:
            entry = ended.parse(key, session.database_get(flow.ended_family, key))
            record = _ended_record(entry, flow) if entry else None
            if record is not None:
                flow.writer.enqueue("finish", record)
                log.info("call %s ended while crmagi was down: collected from AstDB", record.linkedid)
            else:
                log.warning("AstDB %s/%s is not a crmagi entry; deleted", flow.ended_family, key)
            session.database_del(flow.ended_family, key)
    except Exception as exc:    # noqa: BLE001 - entries stay in AstDB for the next request
        log.warning("could not collect calls that ended while crmagi was down: %s", exc)
    finally:
        flow.collecting.difference_update(keys)


def _ended_record(entry, flow):
    values = entry.values
    target = values["CRM_DID"] if values["CRM_DIRECTION"] == "Inbound" else values["CRM_DIALED"]
    return end_of_call(values, lambda: rebuild(flow, values["CRM_DIRECTION"], values["linkedid"],
                                                 values["uniqueid"], values["callerid"], target),
                        ended_at=entry.ended_at)


def end_of_call(values, start_of, ended_at=None):
    """The finished CallRecord from the hangup request's variables (read now, kept in
    AstDB, or told by the CDR: agi/cdr/calls.py): CRM_CALL's start, else ``start_of()``'s;
    None when it is no crmagi call."""
    record = callstate.unpack(values["CRM_CALL"])
    rebuilt = record is None
    if rebuilt:
        record = start_of()
        if record is None:
            return None
    _apply_hangup(record, values, ended_at=ended_at)
    if rebuilt:
        _started_from_durations(record)
    return record


def _started_from_durations(record):
    """A rebuilt call only knows when it ended: it began ring + talk seconds before."""
    if record.ring_seconds is not None or record.talk_seconds is not None:
        total = (record.ring_seconds or 0) + (record.talk_seconds or 0)
        record.started_at = record.ended_at - timedelta(seconds=total)


def _apply_hangup(record, values, ended_at=None):
    """Pure: the hangup request's variables onto the record.  The answering extension's
    user is named by the writer (crmsync/linking.py), when the CRM answers."""
    record.ended_at = ended_at or _now()
    record.dial_status = (values["DIALSTATUS"] or "").upper() or None
    record.talk_seconds = callstate.to_int(values["ANSWEREDTIME"])
    dialed = callstate.to_int(values["DIALEDTIME"])
    if dialed is not None:
        record.ring_seconds = max(0, dialed - (record.talk_seconds or 0))
    peer = values["DIALEDPEERNUMBER"] if record.dial_status == "ANSWER" else None
    if record.talk_seconds is not None and not peer:
        peer = values["MEMBERINTERFACE"]   # answered through Queue(): no DIALSTATUS there
    record.answered_extension = callstate.extension_from_peer(peer)
    if record.direction == "Outbound":     # the peer is the outside number; our side is the caller
        record.answered_extension = record.extension if record.talk_seconds is not None else None
    record.recording = values["MIXMONITOR_FILENAME"] or None
    record.hangup_cause = values["HANGUPCAUSE"] or None


ROUTES = {"incoming": incoming, "outgoing": outgoing, "hangup": hangup}
