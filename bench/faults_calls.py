"""The fault campaign's calls: a deterministic plan, and the process that places them.

``make_plan`` draws every call from the seed (same arguments, same calls), so the driver
process that places them, the AMI feed that plays their events and the reconciliation
all see one plan without shipping it around.  Callers are known numbers of every
module (Contacts, Accounts, Leads), unknown numbers and withheld ones; a share of the
calls is outbound (an extension dialling a known or unknown number).

The driver is bench/agi_dialogue.py's lean engine (Asterisk's bytes, one command answered per
socket wake-up, the final HANGUP) with the campaign's rules on top: each call has its
own direction, caller, Dial result and talk time; when crmagi refuses the first AGI
(it is down) the dialplan goes on, as Asterisk's AGISTATUS=FAILURE does, and the hangup
handler's AGI still runs when the call ends, ``down_hold`` seconds later.  Unless crmagi
set CRM_HANGUP=done in the hangup handler's AGI (it was down, or killed mid-request), the
include keeps the call's facts in AstDB (agi/fastagi/ended.py); all calls share one AstDB, as on
one Asterisk, so a later hangup request collects them.  For each
session it records the wall-clock connect time, how long until crmagi closed, and how
it ended (ok, refused, timeout): the answer times the reconciliation checks.
"""
import heapq
import json
import os
import random
import sys
import time

from faults_db import DID, UNKNOWN_DIGIT, USERS, caller_id, dialled
from agi_dialogue import Call, LeanEngine, dial_result

from agi.fastagi import ended
from agi.demo.asterisk_commands import Channel

ANONYMOUS = ("", "anonymous", "Unknown")
EXTENSIONS = sorted(USERS.values())
SCENARIO = {("in", True, "known"): "01-inbound-answered", ("in", True, "anonymous"): "03b-inbound-anonymous",
            ("in", True, "unknown"): "03c-inbound-unknown", ("in", False, "NOANSWER"): "02a-inbound-noanswer",
            ("in", False, "BUSY"): "02b-inbound-busy", ("out", True, ""): "04a-outbound-answered",
            ("out", False, ""): "04b-outbound-busy"}


def make_plan(rate, duration, seed, seeded, epoch, outbound_share=0.2, anonymous_share=0.1, unknown_share=0.2,
              hold=(0.2, 1.0)):
    """Every call of the campaign: when it starts (``at``, s), who calls whom, what Dial did."""
    rng = random.Random(seed)
    modules = sorted(seeded)
    plan = []
    for i in range(int(rate * duration)):
        serial = i + 1
        direction = "out" if rng.random() < outbound_share else "in"
        r = rng.random()
        record = module = None
        if direction == "in" and r < anonymous_share:
            kind, number = "anonymous", rng.choice(ANONYMOUS)
        elif r < anonymous_share + unknown_share:
            n = rng.randrange(10 ** 6)
            kind, number = "unknown", (caller_id if direction == "in" else dialled)(UNKNOWN_DIGIT, n)
        else:
            module = kind = rng.choice(modules)
            record, inbound_number, dialled_number = rng.choice(seeded[module])
            number = inbound_number if direction == "in" else dialled_number
        dial = dial_result(rng, rng.choice(EXTENSIONS))
        answered = dial["DIALSTATUS"] == "ANSWER"
        if direction == "in":
            callerid, target = number, DID
            key = (direction, answered, "known" if module else kind) if answered else \
                (direction, False, dial["DIALSTATUS"])
        else:
            callerid, target = rng.choice(EXTENSIONS), number
            dial["DIALEDPEERNUMBER"] = number
            key = (direction, answered, "")
        plan.append({"i": i, "serial": serial, "linkedid": "%d.%d" % (epoch, serial), "at": i / rate,
                     "direction": direction, "kind": kind, "module": module, "record": record,
                     "callerid": callerid, "number": target, "dial": dial,
                     "hold": rng.uniform(*hold), "scenario": SCENARIO[key]})
    return plan


class CampaignCall(Call):
    """A lean-engine call with its own plan (direction, numbers, Dial result) and results."""
    __slots__ = ("plan", "result")

    def __init__(self, plan, address):
        super().__init__(plan["i"], plan["serial"], plan["linkedid"], address, plan["callerid"])
        if plan["direction"] == "in":
            variables = {"CRM_DIRECTION": "Inbound", "CRM_DID": plan["number"]}
        else:
            self.name = "PJSIP/%s-%08x" % (plan["callerid"], plan["serial"])
            variables = {"CRM_DIRECTION": "Outbound", "CRM_DIALED": plan["number"]}
        self.chan = Channel(self.name, callerid=plan["callerid"], calleridname="", linkedid=plan["linkedid"],
                            variables=variables)
        self.plan, self.result = plan, {"serial": plan["serial"]}


class CampaignEngine(LeanEngine):
    def __init__(self, cfg):
        res = {"errors": {}, "error_examples": {}}
        super().__init__(cfg, res, callers=None, rng=None)
        self.done = []
        self.astdb = {}          # Asterisk's AstDB: one for every call

    def _open(self, call, script, context, priority, args):
        call.astdb = self.astdb
        super()._open(call, script, context, priority, args)

    def start_call(self, call):
        self.active += 1
        script, context = ("incoming", "crmagi-inbound") if call.plan["direction"] == "in" else \
            ("outgoing", "crmagi-outbound")
        self._open(call, script, context, 3, [call.plan["number"]])

    def _note(self, call, state):
        elapsed = time.perf_counter() - call.t0
        first = call.phase != "hangup"
        call.result["in" if first else "hangup"] = {
            "t0": time.time() - elapsed, "ms": elapsed * 1000.0, "state": state,
            "status": call.assigned.get("CRM_STATUS", "") if first else "",
            "call_id": call.assigned.get("CRM_CALL_ID", "") if first else ""}
        return first

    def _fail(self, call, kind, detail):
        if call.sock is not None:
            self._close(call)
        if self._note(call, "refused" if kind == "connect" else kind):
            # AGISTATUS=FAILURE (crmagi down) or given up: the dialplan goes on to the
            # normal destination, and the hangup handler runs when that call ends.
            call.chan.vars["AGISTATUS"] = "FAILURE"
            wait = self.cfg["down_hold"] if kind == "connect" else call.plan["hold"]
            heapq.heappush(self.holds, (time.monotonic() + wait, call.serial, call))
        else:
            self._finished(call)

    def _session_done(self, call):
        self._end_session(call)
        if self._note(call, "ok"):
            heapq.heappush(self.holds, (time.monotonic() + call.plan["hold"], call.serial, call))
        else:
            self._finished(call)

    def _finished(self, call):
        if call.chan.vars.get(ended.DONE_VARIABLE) != "done":    # the include's fallback
            self.astdb[(ended.FAMILY, call.uniqueid)] = call.chan.expand(ended.dialplan_value())
        self.active -= 1
        self.done.append(call.result)

    def _hangup(self, call):
        chan, dial = call.chan, dict(call.plan["dial"])
        chan.cause = dial.pop("HANGUPCAUSE")
        for key, value in dial.items():
            chan.write(key, value)
        chan.dead = True
        self._open(call, "hangup", "crmagi-hangup", 1, [])

    def run_plan(self, plan, address, mono0):
        limit, i, next_expire, late, late_i = self.cfg["concurrency"], 0, 0.0, 0, -1
        while True:
            now = time.monotonic()
            while i < len(plan) and now >= mono0 + plan[i]["at"] and self.active < limit:
                self.start_call(CampaignCall(plan[i], address))
                i += 1
            if i < len(plan) and self.active >= limit and now >= mono0 + plan[i]["at"] and i != late_i:
                late, late_i = late + 1, i          # this call starts late: too many in flight
            if i >= len(plan) and not self.active:
                break
            next_expire = self.tick(mono0 + plan[i]["at"] if i < len(plan) else None, next_expire)
        self.ep.close()
        return late


def driver(cfg):
    """The driver process: the plan from cfg, placed from wall time cfg["start_at"]."""
    plan = make_plan(cfg["rate"], cfg["duration"], cfg["seed"], cfg["seeded"], cfg["epoch"], **cfg["mix"])
    engine = CampaignEngine(cfg)
    mono0 = time.monotonic() + (cfg["start_at"] - time.time())
    late = engine.run_plan(plan, tuple(cfg["address"]), mono0)
    return {"calls": engine.done, "late": late, "cpu": sum(os.times()[:2])}


if __name__ == "__main__":
    json.dump(driver(json.loads(sys.stdin.read())), sys.stdout)
