"""CPU of whole calls through crmagi's FastAGI server, one after another (issue #12).

crmagi's App runs in this process on a ``generate.py`` database (index rebuilt), without AMI;
a spawned client process plays Asterisk for N sample callers, one call at a time: the
``incoming`` request on a fresh channel, what Dial left (answered by 101, a recording), then
the hangup handler's ``hangup`` request on the dead channel (agi/demo/simulator.py answers
every command as Asterisk 22 does).  So one item is everything crmagi does for a call but the
AMI listener: both AGI dialogues, the lookup, the start write, the finish write.
``bench/instructions.py --parts call`` counts its instructions (the client is not counted).

    python bench/call_session.py --database DB --samples FILE --calls 500
"""
import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_config  # noqa: E402


def asterisk(port, database, numbers):
    """The client: each number's call, the next one once the previous hangup request closed.
    The hangup waits until the start's row is written, as on a real call (it rings for seconds
    first): else the finish would queue behind a start still in flight, more or less often
    with the timing, and the count would not repeat."""
    import pymysql
    from agi.demo.simulator import SimulatedCall

    db = pymysql.connect(host="127.0.0.1", user="root", database=database, autocommit=True)
    for number in numbers:
        call = SimulatedCall(("127.0.0.1", port), number="4930123400", callerid=number)
        call_id = call.start().variables.get("CRM_CALL_ID")
        for _ in range(2000):
            with db.cursor() as cursor:
                if cursor.execute("SELECT 1 FROM crmagi_calls WHERE call_id = %s", (call_id,)):
                    break
            time.sleep(0.005)
        call.finish({"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "30", "DIALEDTIME": "35", "DIALEDPEERNUMBER": "101",
                     "MIXMONITOR_FILENAME": "/var/spool/asterisk/monitor/in-x.wav"})


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(database, samples, calls, region="DE"):
    import gevent
    from agi.app import App
    from agi.config import load

    ini = write_config("mysql+pymysql://root@127.0.0.1:3306/%s" % database,
                       Path(tempfile.mkdtemp(prefix="crmagi-session-")) / "crmagi.ini", port=0, region=region)
    app = App(load(str(ini)), popup_server=False).start()
    try:
        numbers = [s["caller"] for s in json.load(open(samples))["present"]][:calls]
        app.flow.directory.lookup(numbers[0])       # reflection, users, phonenumbers' metadata
        started, wall = _cpu(), time.monotonic()
        client = multiprocessing.get_context("spawn").Process(target=asterisk, args=(app.agi.address[1], database, numbers))
        client.start()
        while client.is_alive():
            gevent.sleep(0.05)
        gevent.sleep(0.3)                            # the last finish is written after its request closed
        return {"calls": len(numbers), "us_per_call": (_cpu() - started) / max(1, len(numbers)) * 1e6,
                "wall_s": time.monotonic() - wall, "spooled": app.writer.pending()}
    finally:
        app.stop(timeout=1)


def main(argv=None):
    from gevent import monkey

    monkey.patch_all()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--region", default="DE")
    args = p.parse_args(argv)
    r = run(args.database, args.samples, args.calls, args.region)
    print("%d calls one after another: crmagi CPU %.0f us per call, %.1f s, %d ops left in the spool"
          % (r["calls"], r["us_per_call"], r["wall_s"], r["spooled"]))


if __name__ == "__main__":
    main()
