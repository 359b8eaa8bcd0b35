"""Live junk run: recorded calls through the App against MariaDB, once alone and once while many
sockets send junk and truncated FastAGI and websocket traffic and the fake AMI interleaves junk
frames with the real events; prints what each run wrote and whether the calls came out the same.

    python bench/junk_traffic.py --sockets 200 --ami-junk 200 --rounds 3

The same as tests/test_junk_traffic.py (which runs one round of it in CI), bigger.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import conftest  # noqa: E402,F401  (gevent monkey-patching first)
from test_junk_traffic import SCENARIOS, TIMEOUT, Run  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=200, help="junk sockets open at once (half AGI, half websocket)")
    parser.add_argument("--ami-junk", type=int, default=200, help="junk AMI frames interleaved into each call's stream")
    parser.add_argument("--rounds", type=int, default=3, help="times the recorded calls are played under junk")
    args = parser.parse_args(argv)
    import logging
    logging.disable(logging.CRITICAL)      # every junk peer dropped is a log line
    work = Path(tempfile.mkdtemp(prefix="crmagi-junk-"))
    clean = Run(work / "clean").play()
    print("baseline: %d recorded calls (%s), max answer %.3f s" % (
        len(SCENARIOS), ", ".join(SCENARIOS), max(r.elapsed for results in clean.sessions.values() for r in results)))
    print("%-6s %8s %12s %10s %10s %12s %9s %9s %12s" % ("round", "sockets", "junk conns", "AGI drops",
                                                         "WS refused", "AMI junk", "calls ok", "differ",
                                                         "max answer s"))
    failures = 0
    for round_ in range(1, args.rounds + 1):
        started = time.monotonic()
        junk = Run(work / ("junk%d" % round_), sockets=args.sockets, ami_junk=args.ami_junk, seed=round_).play()
        same = [n for n in SCENARIOS if junk.calls[n] == clean.calls[n]]
        slowest = max(r.elapsed for results in junk.sessions.values() for r in results)
        late = [n for n, results in junk.sessions.items() for r in results
                if r.timed_out or not r.server_closed or r.elapsed >= TIMEOUT]
        differ = len(SCENARIOS) - len(same) + (junk.variables() != clean.variables())
        failures += differ + len(late) + (junk.stats["ami"]["connects"] != clean.stats["ami"]["connects"])
        print("%-6d %8d %12d %10d %10d %12d %9d %9d %12.3f" % (
            round_, args.sockets, junk.connections, junk.stats["agi"]["errors"], junk.stats["ws"]["refused"],
            junk.stats["ami"]["junk"], len(same), differ, slowest))
        print("       junk kinds: %s  (%.0f s)" % (", ".join("%s=%d" % kv for kv in sorted(junk.counts.items())),
                                                     time.monotonic() - started))
        print("       AMI logins: %d (baseline %d)" % (junk.stats["ami"]["connects"], clean.stats["ami"]["connects"]))
        for name, results in junk.sessions.items():
            for index, result in enumerate(results):
                if result.timed_out or not result.server_closed or result.elapsed >= TIMEOUT:
                    print("       late: %s session %d: %.3f s, commands %s" % (
                        name, index, result.elapsed, [c.decode(errors="replace").strip() for c in result.commands]))
        for name in SCENARIOS:
            if junk.variables()[name] != clean.variables()[name]:
                print("       %s told the dialplan %s, without junk %s" % (
                    name, sorted(set(junk.variables()[name].items()) - set(clean.variables()[name].items())),
                    sorted(set(clean.variables()[name].items()) - set(junk.variables()[name].items()))))
    print("\n%s" % ("all calls unaffected" if not failures else "%d finding(s)" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
