"""How fast the spool's flusher replays a backlog, and how long the AGI path waits on the spool
meanwhile (issue #12: past 2,000 events behind, the AMI listener's updates go through it).

Fills a fresh spool with N live updates of N/2 calls (two per call, as an answer and a
transfer), then replays them with CallWriter.flush against a CRM that takes each write after 0.5 ms,
while another greenlet does what each AGI write does on the spool (has_call, push_ahead,
forget) in a loop and records how long each took, and a third sleeps 1 ms at a time and
records how late it wakes: what a block of the event loop (a sync on it) costs every call
of the process, not only the spool's users.  Monkey-patched like ``crmagi serve``, so
durable spool writes run in gevent's thread pool as they do there.  No database: what it
shows is the spool's own cost.

    python bench/spool_replay.py --ops 4000
"""
import argparse
import json
import os
import sys
import tempfile
import time

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from crmsync.models import LiveUpdate  # noqa: E402
from crmsync.spool import Spool  # noqa: E402
from crmsync.writer import CallWriter  # noqa: E402


class FastCrm:
    """Takes each write after one short round trip (0.5 ms, a quiet local MariaDB)."""

    def __init__(self):
        self.applied = 0

    def apply(self, change):
        gevent.sleep(0.0005)
        self.applied += 1
        return True

    def ping(self):
        return True


def agi_writes(spool, waits, stop):
    """What CallWriter.begin / complete do on the spool for one AGI write."""
    n = 0
    while not stop.is_set():
        n += 1
        started = time.perf_counter()
        call_id = "agi-%d" % n
        if not spool.has_call(call_id):
            spool.forget(spool.push_ahead("start", {"call_id": call_id}, hold=1.5))
        waits.append(time.perf_counter() - started)
        gevent.sleep(0.002)


def loop_lag(lags, stop):
    """How late a 1 ms sleep wakes: the event loop's own stalls."""
    while not stop.is_set():
        started = time.perf_counter()
        gevent.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


def _summary(values, over_ms=None):
    values.sort()
    out = {"n": len(values), "p50": round(values[len(values) // 2] * 1000, 3),
           "p99": round(values[int(len(values) * 0.99)] * 1000, 3), "max": round(values[-1] * 1000, 3)}
    if over_ms is not None:
        out["over_%g_ms" % over_ms] = sum(1 for v in values if v * 1000 > over_ms)
    return out


def run(ops):
    folder = tempfile.mkdtemp(prefix="crmagi-spool-bench-")
    spool = Spool(os.path.join(folder, "spool.sqlite"))
    crm = FastCrm()
    updates = [LiveUpdate("call-%d" % (k // 2), "answered" if k % 2 == 0 else "transferred", extension="10%d" % (k % 10))
               for k in range(ops)]
    spool.push_many([("live", u.to_json(), None) for u in updates])
    writer = CallWriter(crm, spool, live=crm)
    waits, stop = [], gevent.event.Event()
    agi = gevent.spawn(agi_writes, spool, waits, stop)
    lags = []
    probe = gevent.spawn(loop_lag, lags, stop)
    cpu0, started = time.process_time(), time.perf_counter()
    applied = 0
    while len(spool) > 0:
        applied += writer.flush()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    stop.set()
    gevent.joinall([agi, probe])
    spool.close()
    return {"ops": ops, "applied": applied, "seconds": round(elapsed, 3), "ops_per_s": round(applied / elapsed),
            "cpu_ms_per_op": round(cpu * 1000 / applied, 3), "agi_spool_ms": _summary(waits),
            "loop_lag_ms": _summary(lags, over_ms=2)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=4000)
    print(json.dumps(run(p.parse_args().ops), indent=1))


if __name__ == "__main__":
    main()
