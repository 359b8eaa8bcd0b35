"""CPU of the AMI listener per call, stage by stage, in one process (issue #12).

Renders N distinct calls of a recorded scenario (bench/faults_ami.py Scenario, with the
Filter whitelist crmagi sends, so the events Asterisk would send it), then times, on
fresh call models, the cumulative stages: frame parsing; + unescaping; + the call model;
+ the pipeline's effects (domain events to live updates, given to a writer that only
counts them).  No sockets and no database: what it shows is the Python cost of the
listener itself; the writes it causes are measured by bench/load.py.

    python bench/ami_path.py --calls 3000
    python bench/ami_path.py --calls 3000 --scenario 06a-blind-transfer
"""
import argparse
import os
import re
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faults_ami import Scenario  # noqa: E402

from agi.ami import amiproto, callmodel  # noqa: E402
from agi.ami.live import EVENT_FILTERS, LivePipeline  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "asterisk")
INBOUND = ("from-pstn", "queue-in", "agent-in")
STAGES = ("parse", "unescape", "model", "effects")


class CountingWriter:
    def __init__(self):
        self.ops = self.updates = 0

    def submit_live(self, change):
        self.ops += 1
        self.updates += len(getattr(change, "updates", (change,)))
        return True


class NoDirectory:
    def user_by_extension(self, extension):
        return None


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calls(path, count):
    scenario = Scenario(path)
    filters = [re.compile(p.encode()) for p in EVENT_FILTERS]
    keep = lambda frame: any(p.search(frame) for p in filters)      # noqa: E731 - Asterisk's Filter
    return [scenario.render("1700000000.%d" % i, i, 1700000000, keep) for i in range(count)]


def run(stage, streams):
    """CPU seconds of ``stage`` (and the stages before it) over every stream; the writer."""
    model = callmodel.CallModel(INBOUND, ("from-internal",), (), 3600.0)
    writer = CountingWriter()
    pipeline = LivePipeline(model, NoDirectory(), writer, lambda system, linkedid: "call-" + linkedid)
    upto = STAGES.index(stage)
    started = _cpu()
    for stream in streams:
        frames, _ = amiproto.split_frames(stream)
        for frame in frames:
            message = amiproto.parse_frame(frame)
            if upto >= 1:
                message = amiproto.unescape(message)
            if upto >= 2:
                for event in model.feed(message, time.monotonic()):
                    if upto >= 3:
                        pipeline.enqueue(event)
        if upto >= 3:
            pipeline._effects([pipeline.queue.get_nowait() for _ in range(pipeline.queue.qsize())])
    return _cpu() - started, writer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--scenario", default="01-inbound-answered")
    p.add_argument("--fixtures", default=FIXTURES)
    args = p.parse_args(argv)
    streams = calls(os.path.join(args.fixtures, args.scenario + ".ami.txt"), args.calls)
    events = streams[0].count(b"\r\n\r\n")
    print("%s: %d calls, %d events and %d bytes per call" % (args.scenario, args.calls, events, len(streams[0])))
    for stage in STAGES:
        seconds, writer = run(stage, streams)
        extra = ", %.2f live ops (%.2f updates) per call" % (
            writer.ops / args.calls, writer.updates / args.calls) if stage == "effects" else ""
        print("  up to %-9s %6.0f us per call%s" % (stage, seconds / args.calls * 1e6, extra))


if __name__ == "__main__":
    main()
