"""A statistical profiler for a server under load, where py-spy is not installed:
``python bench/stack_sampler.py OUT -m agi.cli serve ...`` runs the module with a SIGPROF
timer (every 2 ms of the process's CPU time) that records the running Python stack.
At exit it writes py-spy's "raw" format (``frame;frame;... count`` lines) to OUT, which
bench/load_report.py summarises.  Unlike cProfile it does not slow the code it measures
much, and CPU time spent in another greenlet is not charged to the one that switched away.
"""
import atexit
import collections
import runpy
import signal
import sys

INTERVAL = 0.002


def main():
    out, rest = sys.argv[1], sys.argv[2:]
    if rest[:1] != ["-m"] or len(rest) < 2:
        raise SystemExit("usage: stack_sampler.py OUT -m MODULE [ARGS...]")
    counts = collections.Counter()

    def sample(_signum, frame):
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append("%s (%s:%s)" % (code.co_name, code.co_filename, frame.f_lineno))
            frame = frame.f_back
        counts[";".join(reversed(stack))] += 1

    def dump():
        signal.setitimer(signal.ITIMER_PROF, 0)
        with open(out, "w") as handle:
            for stack, count in counts.items():
                handle.write("%s %d\n" % (stack, count))

    atexit.register(dump)
    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    sys.argv = [rest[1]] + rest[2:]
    runpy.run_module(rest[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
