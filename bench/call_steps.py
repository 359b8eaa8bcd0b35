"""CPU of a call's CRM steps, one call after another in one process (issue #12).

Builds crmagi's App on a ``generate.py`` database (index rebuilt) and, for N sample callers,
times each step with getrusage: the lookup (phone index, one round trip), the start write
(CallWriter.submit: written ahead in the spool, the INSERTs and COMMIT in one packet, the
spool entry forgotten), the finish write (the locked read with the number's missed-call
entries, then the UPDATEs and COMMIT).  No AGI and no AMI (bench/agi_session.py and
bench/ami_path.py measure those); calls never overlap, so nothing is batched or queued.

    python bench/call_steps.py --database DB --samples FILE --calls 2000
"""
import argparse
import dataclasses
import json
import os
import resource
import tempfile
import time
import uuid
from datetime import datetime, timezone

from gevent import monkey

monkey.patch_all()

from agi.app import App  # noqa: E402
from agi.config import load  # noqa: E402
from crmsync.models import CallRecord  # noqa: E402


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(step, items):
    started = _cpu()
    out = [step(item) for item in items]
    return (_cpu() - started) / max(1, len(items)) * 1e6, out


def linked_record(app, number, result, epoch, i):
    """The CallRecord of sample call ``i`` from ``number``, linked to its lookup ``result``."""
    rec = CallRecord(call_id=str(uuid.uuid4()), linkedid="%d.%d" % (epoch, i), uniqueid="%d.%d" % (epoch, i),
                     direction="Inbound", number=number, started_at=datetime.now(timezone.utc),
                     did="4930123400", extension="201")
    app.flow.linker.link(rec, result)
    return rec


def run(database, samples, calls, region="DE", steps="finish"):
    """``steps``: the chain runs up to this step (lookup, start or finish); the later ones are skipped."""
    work = tempfile.mkdtemp(prefix="crmagi-steps-")
    ini = os.path.join(work, "crmagi.ini")
    with open(ini, "w") as f:
        f.write("[crm]\nurl = mysql+pymysql://root@127.0.0.1:3306/%s\n[agi]\nspool = %s\n[lookup]\ndefault_region = %s\n"
                % (database, os.path.join(work, "spool.sqlite"), region))
    app = App(load(ini), popup_server=False)
    try:
        return _steps(app, samples, calls, steps)
    finally:
        app.stop(timeout=1)


def _steps(app, samples, calls, steps):
    app.store.ensure_tables()
    numbers = [s["caller"] for s in json.load(open(samples))["present"]][:calls]
    app.flow.directory.lookup(numbers[0])          # reflection, users, phonenumbers' metadata
    lookup_us, results = _timed(app.flow.directory.lookup, numbers)
    epoch = int(time.time())
    if steps == "lookup":
        return {"calls": len(numbers), "lookup_us": lookup_us}

    def start(pair):
        i, (number, result) = pair
        rec = linked_record(app, number, result, epoch, i)
        app.writer.submit("start", rec)
        return rec
    start_us, records = _timed(start, list(enumerate(zip(numbers, results))))
    if steps == "start":
        return {"calls": len(numbers), "lookup_us": lookup_us, "start_us": start_us}

    def finish(rec):
        return app.writer.submit("finish", dataclasses.replace(
            rec, dial_status="ANSWER", talk_seconds=30, ring_seconds=5, answered_extension="201",
            ended_at=datetime.now(timezone.utc), hangup_cause="16"))
    finish_us, written = _timed(finish, records)
    return {"calls": len(numbers), "lookup_us": lookup_us, "start_us": start_us, "finish_us": finish_us,
            "finished": sum(bool(w) for w in written)}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--region", default="DE")
    p.add_argument("--steps", choices=("lookup", "start", "finish"), default="finish",
                   help="run the chain up to this step (bench/instructions.py counts each step so)")
    args = p.parse_args(argv)
    r = run(args.database, args.samples, args.calls, args.region, args.steps)
    if args.steps != "finish":
        print(json.dumps(r))
        return
    print("%d calls one after another, CPU per call: lookup %.0f us, start %.0f us, finish %.0f us "
          "(%d finishes written)" % (r["calls"], r["lookup_us"], r["start_us"], r["finish_us"], r["finished"]))


if __name__ == "__main__":
    main()
