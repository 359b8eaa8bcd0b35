"""crmagi with parts of a call's work taken out, to weigh each against the floor (issue #12).

``python bench/ablate.py PARTS -m agi.cli serve ...`` (what ``bench/load.py --ablate PARTS``
runs, one worker) starts crmagi with these parts removed or made free:

``spool``
    no write-ahead entries: ``has_call`` answers False, ``push_ahead`` returns a negative
    number (no real entry has it) and writes nothing, ``forget`` does nothing.  A failed or
    timed-out write is lost (its entry never existed), and so are the calls in flight at a
    crash: this weighs the write-ahead entries, it is not a setting, and a run with errors
    says nothing.  (Before the tenth session's change, with ``load.py --hold 0``, it also
    took away the fsync'd push of a hangup that found its start still being written: most of
    the 0.6-0.8 ms it showed.)
``parse``
    every phone number the run will parse is parsed before it starts (the callers of the
    sample file ``CRMAGI_ABLATE_SAMPLES`` and every configured module's phone columns), into
    an unbounded cache: lookups still parse and match the same way, but every parse is a
    cache hit, so phonenumbers' share of a call drops out.
``metrics``
    the per-call Prometheus observations (request counters and histograms, write counters,
    the lookup timer) do nothing.

The results are the same calls, rows and answers; only the cost moves.  For measurement
only: nothing here belongs in a server that takes real calls.
"""
import functools
import itertools
import json
import os
import runpy
import sys

PARTS = ("spool", "parse", "metrics")


def without_spool():
    from crmsync.spool import Spool

    ids = itertools.count(-1, -1)
    Spool.has_call = lambda self, call_id: False
    Spool.push_ahead = lambda self, kind, payload, hold, chain=None: next(ids)
    Spool.forget = lambda self, op_id: None


def warm_parse(config, samples):
    from crmsync import phone
    from sqlalchemy import create_engine, text

    phone._cached = functools.lru_cache(maxsize=None)(phone._parse)
    sample = json.load(open(samples))
    raws = [s["caller"] for s in sample["present"] + sample["absent"]]
    engine = create_engine(config.crm.url)
    with engine.connect() as conn:
        for spec in config.modules:
            query = "SELECT %s FROM %s WHERE deleted = 0" % (", ".join(spec.phone_fields), spec.table)
            for row in conn.execute(text(query)):
                raws.extend(value for value in row if value)
    engine.dispose()
    for raw in raws:
        phone.parse(raw, config.lookup.default_region)
    print("ablate: %d phone numbers parsed ahead" % len(raws), file=sys.stderr, flush=True)


def without_metrics():
    from agi.ops import metrics

    metrics.Metrics.agi_answered = lambda self, route, crm_status, seconds: None
    metrics.Metrics.call_write = lambda self, via, ok: None
    metrics.Metrics.timed = lambda self, directory: directory


def main():
    parts, rest = sys.argv[1].split(","), sys.argv[2:]
    unknown = set(parts) - set(PARTS)
    if unknown or rest[:1] != ["-m"] or len(rest) < 2:
        raise SystemExit("usage: ablate.py %s[,...] -m MODULE [ARGS...] (unknown: %s)"
                         % ("|".join(PARTS), ",".join(sorted(unknown))))
    from gevent import monkey

    monkey.patch_all()            # as `crmagi serve` does first, before the patched modules load
    from agi.config import load

    config = load(rest[rest.index("-c") + 1])
    if "spool" in parts:
        without_spool()
    if "parse" in parts:
        warm_parse(config, os.environ["CRMAGI_ABLATE_SAMPLES"])
    if "metrics" in parts:
        without_metrics()
    sys.argv = [rest[1]] + rest[2:]
    runpy.run_module(rest[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
