"""PURE: CDR rows -> the calls crmagi logs, and each call's end as its hangup request would see it.

A call is the rows of one linkedid (or, in a Master.csv without ``newcdrcolumns``, of
one uniqueid) that ran in an inbound or outbound context.  Of a Local channel pair whose
both halves did (a call originated into that context through ``Local/``), the ``;2``
half runs the dialplan and is kept; the ``;1`` half is the caller.  The Call itself is
built by the FastAGI rules for a call whose start was lost (agi/fastagi/routes.py
``rebuild`` and ``end_of_call``), from the variables the hangup request would have read.
"""
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

from agi.fastagi import routes

from .csvrows import CdrRow

INCLUDE_INBOUND = "crmagi-inbound"      # the contexts of the include (extensions/)
INCLUDE_OUTBOUND = "crmagi-outbound"
# cdr disposition -> DIALSTATUS of a Dial() that ended so
DIAL_STATUS = {"ANSWERED": "ANSWER", "NO ANSWER": "NOANSWER", "BUSY": "BUSY", "CONGESTION": "CONGESTION",
               "FAILED": "CHANUNAVAIL"}


@dataclass(frozen=True)
class Contexts:
    """Which rows are whose calls: one crmagi's (or one tenant's) contexts and DIDs."""
    inbound: FrozenSet[str]
    outbound: FrozenSet[str]
    tenant: str = ""                         # a tenant's include contexts end in -NAME
    tenant_contexts: FrozenSet[str] = frozenset()
    tenant_dids: FrozenSet[str] = frozenset()

    def direction(self, row: CdrRow) -> Optional[str]:
        suffix = "-" + self.tenant if self.tenant else ""
        if row.dcontext in self.inbound or row.dcontext == INCLUDE_INBOUND + suffix:
            return "Inbound"
        if row.dcontext in self.outbound or row.dcontext == INCLUDE_OUTBOUND + suffix:
            return "Outbound"
        return None

    def owns(self, row: CdrRow) -> bool:
        """Without a tenant every row; with one, its contexts, its include's, its DIDs."""
        if not self.tenant:
            return True
        return (row.dcontext in self.tenant_contexts or row.dcontext.endswith("-" + self.tenant)
                or row.dst in self.tenant_dids)


@dataclass(frozen=True)
class CdrCall:
    key: str                          # linkedid, else the uniqueid of the channel that ran the dialplan
    direction: str
    rows: Tuple[CdrRow, ...]          # the call's rows in its inbound/outbound context, by start
    ids: FrozenSet[str]               # every linkedid and uniqueid of the call (crmagi_calls may hold any)

    @property
    def first(self):
        return self.rows[0]

    @property
    def ended_at(self):
        return max(row.end for row in self.rows)


def group(rows: List[CdrRow], contexts: Contexts) -> List[CdrCall]:
    """The calls among ``rows``, oldest first."""
    ids: Dict[str, set] = {}
    for row in rows:
        ids.setdefault(row.key, set()).update(filter(None, (row.linkedid, row.uniqueid)))
    dialplan = _without_local_callers([row for row in rows if contexts.direction(row) and contexts.owns(row)])
    by_key: Dict[str, List[CdrRow]] = {}
    for row in dialplan:
        by_key.setdefault(row.key, []).append(row)
    calls = []
    for key, mine in by_key.items():
        mine.sort(key=lambda row: (row.start, row.end))
        calls.append(CdrCall(key=key, direction=contexts.direction(mine[0]), rows=tuple(mine),
                             ids=frozenset(ids[key])))
    return sorted(calls, key=lambda call: call.first.start)


def _local_half(channel):
    """("Local/x@ctx-0000000a", "1") for a Local channel half, else None."""
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[:-2], channel[-1]
    return None


def _without_local_callers(rows):
    halves = [(row, _local_half(row.channel)) for row in rows]
    runners = {half[0] for _, half in halves if half and half[1] == "2"}
    return [row for row, half in halves if not (half and half[1] == "1" and half[0] in runners)]


def hangup_values(call: CdrCall, recording: str = "") -> Dict[str, str]:
    """The variables the ``hangup`` request would have read (routes.HANGUP_VARS), from the CDR.

    Rows with a dstchannel rang someone (Dial, Queue): the last one's disposition is
    DIALSTATUS (Queue() leaves it empty), the answered ones' billsec the talk time, the
    time from the first ring to the last end the time dialled (a ringall queue's legs
    overlap), the answering channel the peer.  The CDR has no hangup cause."""
    dialled = [row for row in call.rows if row.dstchannel]
    answered = [row for row in dialled if row.disposition == "ANSWERED" and row.answer is not None]
    last = dialled[-1] if dialled else None
    status = DIAL_STATUS.get(last.disposition, "") if last is not None and last.lastapp == "Dial" else ""
    peer = answered[-1].dstchannel if answered else ""
    values = dict.fromkeys(routes.HANGUP_VARS, "")
    values.update(DIALSTATUS=status, DIALEDPEERNUMBER=peer, MEMBERINTERFACE=peer,
                  ANSWEREDTIME=str(sum(row.billsec for row in answered)) if answered else "",
                  DIALEDTIME=_span(dialled),
                  MIXMONITOR_FILENAME=recording or "")
    return values


def _span(rows):
    if not rows:
        return ""
    return str(int((max(row.end for row in rows) - min(row.start for row in rows)).total_seconds()))


def is_logged(call: CdrCall, flow) -> bool:
    """Whether crmagi logs such a call: an outbound one to an internal number only with
    [agi] log_internal, as the ``outgoing`` request decides."""
    return call.direction == "Inbound" or not routes.internal_call(flow, call.first.dst)


def record_of(call: CdrCall, flow, recording: str = ""):
    """The finished CallRecord of ``call``, marked backfilled; its lookup is left to the
    writer (PENDING), as for any call whose start was lost."""
    first = call.first
    record = routes.end_of_call(hangup_values(call, recording),
                                lambda: routes.rebuild(flow, call.direction, call.key, first.uniqueid or call.key,
                                                       first.src, first.dst),
                                ended_at=call.ended_at)
    record.started_at = first.start        # the CDR knows it exactly
    record.backfilled = True
    return record
