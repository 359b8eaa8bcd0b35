"""Instructions per call part, counted by valgrind's callgrind (issue #12).

Timings of the in-process scripts moved by up to 2x between runs minutes apart on this
virtual machine; instruction counts do not (callgrind counts the same for the same code
and input, whatever else the box does).  They stand in for user-space CPU: they leave out
the kernel's side of each system call and what cache misses cost, so they rank code
changes, and the load runs (bench/load.py) say what a call costs in seconds.

Each part runs under callgrind twice, with ``--small`` and ``--large`` items, and the
difference divided by the difference of items is one item's instructions (start-up,
imports and warm-up cancel out):

``agi``
    crmagi's FastAGI server through one 10-command session (bench/agi_session.py; the
    client that plays Asterisk is a spawned process valgrind does not follow).
``call``
    whole calls through crmagi's FastAGI server (bench/call_session.py): both AGI requests, the
    lookup, the start and the finish writes; everything but the AMI listener.
``lookup``, ``start``, ``finish``
    bench/call_steps.py run up to that step (``--steps``); a step's own count is its chain's
    minus the previous chain's.

    python bench/instructions.py --database DB --samples FILE            # ~10 minutes
    python bench/instructions.py --database DB --samples FILE --parts lookup --small 100 --large 400
    python bench/instructions.py --database DB --samples FILE --parts call --small 50 --large 200
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHAIN = ("lookup", "start", "finish")


def counted(argv):
    """Instructions callgrind collected over the whole run of ``python argv...``."""
    out = os.path.join(tempfile.mkdtemp(prefix="crmagi-cg-"), "callgrind.out")
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, os.path.realpath(
        sys.executable), *argv], capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError("callgrind run failed (%d): %s" % (proc.returncode, proc.stderr[-2000:]))
    return int(found.group(1))


def per_item(argv_of, small, large):
    return (counted(argv_of(large)) - counted(argv_of(small))) / float(large - small)


def measure(args):
    report = {}
    if "agi" in args.parts:
        report["agi"] = per_item(lambda n: [os.path.join(HERE, "agi_session.py"), "--sessions", str(n),
                                            "--only", "crmagi"], args.small, args.large)
    if "call" in args.parts:
        report["call"] = per_item(lambda n: [os.path.join(HERE, "call_session.py"), "--database", args.database,
                                             "--samples", args.samples, "--calls", str(n)], args.small, args.large)
    chains = {}
    for step in CHAIN[:max((CHAIN.index(p) + 1 for p in args.parts if p in CHAIN), default=0)]:
        chains[step] = per_item(lambda n, step=step: [
            os.path.join(HERE, "call_steps.py"), "--database", args.database, "--samples", args.samples,
            "--calls", str(n), "--steps", step], args.small, args.large)
    previous = 0.0
    for step in CHAIN:
        if step in chains:
            if step in args.parts:
                report[step] = chains[step] - previous
            previous = chains[step]
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", help="a generate.py database with the phone index rebuilt")
    p.add_argument("--samples")
    p.add_argument("--parts", default="agi,lookup,start,finish")
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--large", type=int, default=400)
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if set(args.parts) & (set(CHAIN) | {"call"}) and not (args.database and args.samples):
        p.error("call, lookup, start and finish need --database and --samples")
    report = measure(args)
    for part, value in report.items():
        print("%-7s %9.0f instructions per item" % (part, value))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
