"""A load generator process (started by bench/load.py, config as JSON on stdin, results as
JSON on stdout): the schedule of its share of the calls, paced open loop, run on the lean
engine (bench/agi_dialogue.py) or on agi.demo.simulator's SimulatedCall under gevent.

Call ``i`` of process ``index`` starts at ``start_at + index / rate + i * procs / rate``
with serial ``index * 10_000_000 + i + 1`` and linkedid ``"<epoch>.<serial>"``:
bench/load.py's AMI feed derives the same schedule to play each call's events.
"""
import cProfile
import io
import json
import os
import pstats
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agi_dialogue import DID, LeanEngine, dial_result, serial_of  # noqa: E402

from agi.demo.simulator import MAX_AGI_CONNECT  # noqa: E402

ANONYMOUS = ("", "anonymous", "Unknown")


class CallError(Exception):
    def __init__(self, kind, detail=""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


# -- the simulator engine: agi.demo.simulator.SimulatedCall under gevent --------------------------

def simulator_run(cfg, res, callers, rng, total, mono0, interval, addresses, epoch, index):
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from gevent.pool import Pool
    from agi.demo.simulator import SimulatedCall

    pool = Pool(max(1, cfg["concurrency"] // cfg["procs"]))

    def one(i):
        serial = serial_of(index, i)
        if res["first_start"] is None:
            res["first_start"] = time.time()
        call = SimulatedCall(addresses[serial % len(addresses)], "incoming", number=DID, callerid=callers[i],
                             uniqueid="%d.%d" % (epoch, serial))
        try:
            first, second = call.run(dial=dial_result(rng, None), timeout=cfg["timeout"])
            for result in (first, second):
                if result.agistatus == "FAILURE":
                    raise CallError("connect", "refused or no connect within %gs" % MAX_AGI_CONNECT)
                if result.timed_out:
                    raise CallError("timeout", "server did not close within %.1fs" % cfg["timeout"])
        except CallError as exc:
            res["errors"][exc.kind] = res["errors"].get(exc.kind, 0) + 1
            res["error_examples"].setdefault(exc.kind, exc.detail)
            return
        res["last_end"] = time.time()
        res["completed"] += 1
        res["incoming_ms"].append(first.elapsed * 1000.0)
        res["hangup_ms"].append(second.elapsed * 1000.0)
        status = first.variables.get("CRM_STATUS", "") or "?"
        res["statuses"][status] = res["statuses"].get(status, 0) + 1
        if status == "error":
            res["errors"]["crm_status_error"] = res["errors"].get("crm_status_error", 0) + 1
            res["error_examples"].setdefault("crm_status_error", "CRM_STATUS=error")

    for i in range(total):
        lag = time.monotonic() - (mono0 + i * interval)
        if lag < 0:
            gevent.sleep(-lag)
        else:
            res["max_lag_ms"] = max(res["max_lag_ms"], lag * 1000.0)
        if pool.full():
            res["late"] += 1
            pool.wait_available(timeout=cfg["timeout"])
        if time.monotonic() > mono0 + cfg["duration"] + cfg["timeout"]:
            break
        res["started"] += 1
        pool.spawn(one, i)
    pool.join(timeout=cfg["timeout"] * 2 + 1)
    pool.kill(block=True, timeout=1)


# -- the generator process ----------------------------------------------------------

def caller_numbers(samples, count, present_share, anonymous_share, seed):
    rng = random.Random(seed)
    present = [p["caller"] for p in samples.get("present", [])] or ["+4930111111"]
    absent = [a["caller"] for a in samples.get("absent", [])] or ["+4930999999"]
    out = []
    for _ in range(count):
        r = rng.random()
        out.append(rng.choice(ANONYMOUS) if r < anonymous_share else
                   rng.choice(present) if r < anonymous_share + present_share else rng.choice(absent))
    return out


def worker(cfg):
    """One generator process: paced calls, results as a dict (raw latencies in ms)."""
    samples = json.loads(Path(cfg["samples"]).read_text(encoding="utf-8")) if cfg.get("samples") else {}
    index, procs = cfg["index"], cfg["procs"]
    rate = cfg["rate"] / procs
    total = int(round(cfg["duration"] * rate))
    addresses = [tuple(a) for a in cfg["addresses"]]
    callers = caller_numbers(samples, total, cfg["present_share"], cfg["anonymous_share"], cfg["seed"] + index)
    rng = random.Random(cfg["seed"] * 1000 + index)
    res = {"started": 0, "completed": 0, "late": 0, "max_lag_ms": 0.0, "incoming_ms": [], "hangup_ms": [],
           "statuses": {}, "errors": {}, "error_examples": {}, "first_start": None, "last_end": None}
    mono0 = time.monotonic() + (cfg["start_at"] - time.time()) + index / cfg["rate"]
    interval = 1.0 / rate if rate > 0 else 0
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    profiler = cProfile.Profile() if cfg.get("profile_generator") else None
    if profiler:
        profiler.enable()
    if cfg["engine"] == "lean":
        LeanEngine(cfg, res, callers, rng).run(total, mono0, interval, addresses, cfg["epoch"], index)
    else:
        simulator_run(cfg, res, callers, rng, total, mono0, interval, addresses, cfg["epoch"], index)
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        res["generator_profile"] = out.getvalue()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_seconds"] = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return res


if __name__ == "__main__":
    json.dump(worker(json.loads(sys.stdin.read())), sys.stdout)
