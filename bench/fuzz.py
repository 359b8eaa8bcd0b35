"""Fuzz every parser that faces the network or a user, long: 100,000 inputs each by default.

The strategies and properties are the CI tests' (tests/fuzz_strategies.py, fuzz_targets.py,
fuzz_php.py).  Hypothesis draws --seeds inputs per parser from those strategies; it takes
5-10 ms per input for these strategies, so the rest of the run mutates those seeds
(fuzz_strategies.mutate_value: byte edits, elements dropped, repeated, swapped), about a
hundred times faster.  Each input runs under a timer (a hang is an input that takes longer
than --hang seconds); each parser runs in its own process (--jobs) whose peak RSS is printed
(tracemalloc on every input made the run several times slower: tests/test_fuzz_parsers.py bounds the memory
of 1 MB inputs with it instead).  Findings are not shrunk: the first input of each kind is
printed, to be turned into a regression test.

    python bench/fuzz.py                          # every parser, 100,000 inputs each
    python bench/fuzz.py -n 2000 --only ami_stream,phone --jobs 2
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import conftest  # noqa: E402,F401  (gevent monkey-patching first, and the fixture paths)
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import fuzz_php  # noqa: E402
import fuzz_strategies  # noqa: E402
import fuzz_targets  # noqa: E402
from fuzz_text_strategies import hook_inputs  # noqa: E402

TARGETS = fuzz_targets.TARGETS + [fuzz_targets.Target("suitecrm_hook", hook_inputs, fuzz_php.check_hook)]


class Hang(BaseException):
    """Raised by the timer inside a check that ran too long (BaseException: no `except Exception` eats it)."""


def _alarm(signum, frame):
    raise Hang()


def run_target(target, count, hang, rng_seed, seeds):
    import logging
    logging.disable(logging.CRITICAL)       # the code under test logs every bad input it drops
    stats = {"name": target.name, "inputs": 0, "failures": 0, "hangs": 0, "peak": 0, "slowest": 0.0,
             "found": {}}
    signal.signal(signal.SIGALRM, _alarm)

    def one(value):
        stats["inputs"] += 1
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, hang)
        try:
            target.check(value)
        except Hang:
            stats["hangs"] += 1
            stats["found"].setdefault("hang", repr(value)[:300])
        except Exception as exc:       # noqa: BLE001 - every escape is a finding
            stats["failures"] += 1
            where = exc.__traceback__
            while where.tb_next is not None:
                where = where.tb_next
            key = "%s at %s:%d" % (type(exc).__name__, Path(where.tb_frame.f_code.co_filename).name, where.tb_lineno)
            stats["found"].setdefault(key, "%s\n      input: %s" % (str(exc)[:200], repr(value)[:300]))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        stats["slowest"] = max(stats["slowest"], time.perf_counter() - started)

    corpus = []
    draw = seed(rng_seed)(settings(max_examples=min(seeds, count), deadline=None, database=None,
                                   phases=[Phase.generate], suppress_health_check=list(HealthCheck))(
        given(target.strategy())(lambda value: corpus.append(value))))
    started = time.perf_counter()
    draw()
    rng = random.Random(rng_seed)
    for value in corpus:
        one(value)
    while stats["inputs"] < count:
        one(fuzz_strategies.mutate_value(rng.choice(corpus), rng))
    stats["seconds"] = time.perf_counter() - started
    stats["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if target.name == "suitecrm_hook":
        fuzz_php.hook().close()
    return stats


def _children(names, args):
    """--jobs N: each parser in its own process (gevent is patched in: no multiprocessing pool)."""
    results, waiting, running = [], list(names), []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            name = waiting.pop(0)
            cmd = [sys.executable, __file__, "--json", "--only", name, "-n", str(args.count), "--hang",
                   str(args.hang), "--seed", str(args.seed), "--seeds", str(args.seeds)]
            running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE))
        while all(child.poll() is None for child in running):
            time.sleep(0.5)
        done = next(child for child in running if child.poll() is not None)
        running.remove(done)
        results.append(json.loads(done.communicate()[0].decode().splitlines()[-1]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=100_000, help="inputs per parser")
    parser.add_argument("--only", default="", help="comma-separated parser names (default: all)")
    parser.add_argument("--hang", type=float, default=2.0, help="seconds after which one input counts as a hang")
    parser.add_argument("--seed", type=int, default=9, help="hypothesis seed (the run is reproducible)")
    parser.add_argument("--seeds", type=int, default=2000, help="inputs drawn by hypothesis, before mutating them")
    parser.add_argument("--jobs", type=int, default=1, help="parsers fuzzed at once, one process each")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {t.name for t in TARGETS}
    if unknown:
        parser.error("unknown parser(s) %s; known: %s" % (", ".join(sorted(unknown)),
                                                           ", ".join(t.name for t in TARGETS)))
    targets = [t for t in TARGETS if not names or t.name in names]
    if args.json:
        for target in targets:
            print(json.dumps(run_target(target, args.count, args.hang, args.seed, args.seeds)), flush=True)
        return 0
    print("fuzzing %d parser(s), %d inputs each (%d drawn by hypothesis), seed %d, hang > %.1fs"
          % (len(targets), args.count, min(args.seeds, args.count), args.seed, args.hang), flush=True)
    if args.jobs > 1:
        results = _children([t.name for t in targets], args)
    else:
        results = [run_target(t, args.count, args.hang, args.seed, args.seeds) for t in targets]
    print()
    print("%-20s %9s %10s %6s %13s %11s %9s" % ("parser", "inputs", "unhandled", "hangs", "peak RSS MB",
                                               "slowest ms", "seconds"))
    for r in results:
        print("%-20s %9d %10d %6d %13.2f %11.1f %9.1f" % (r["name"], r["inputs"], r["failures"], r["hangs"],
                                                           r["peak"] / 1e6, r["slowest"] * 1000, r["seconds"]))
    total = sum(r["failures"] + r["hangs"] for r in results)
    for r in results:
        for key, detail in r["found"].items():
            print("\n%s: %s\n      %s" % (r["name"], key, detail))
    print("\n%d input(s) in all, %d finding(s)" % (sum(r["inputs"] for r in results), total))
    return 1 if total else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
