"""AGI answer latency of `crmagi serve` on the core call path (issue #2).

Places N simulated calls one after another (agi.demo.simulator: Asterisk 22's bytes),
each an `incoming` request (lookup, variables, CALLERID(name)) and its `hangup`,
against a `crmagi serve` process using a SuiteCRM database in the local MariaDB.
"Answer latency" is what Asterisk waits: from connect until crmagi closes the
socket of the `incoming` request.

    python bench/agi_latency.py --calls 2000               # back to back
    python bench/agi_latency.py --calls 1000 --pause 0.02  # each call alone
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import time  # noqa: E402

from agi.demo.simulator import SimulatedCall  # noqa: E402
from common import create_database, drop_database, percentile, rss_mb, sql, start_server  # noqa: E402

CALLERS = ["+4930111111", "+4930555555", "+4930999999", ""]   # contact, account, unknown, withheld
DIAL = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "30", "DIALEDTIME": "35", "DIALEDPEERNUMBER": "101",
        "HANGUPCAUSE": "16", "MIXMONITOR_FILENAME": "/var/spool/asterisk/monitor/bench.wav"}


def seed(database):
    sql(database, "UPDATE users SET phone_work='101' WHERE id='seed_sally_id'")
    sql(database, "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted)"
                  " VALUES ('bench-contact-1', 'Anna', 'ONeil', '+49 (30) 111-111', 'seed_sally_id', 0)")
    sql(database, "INSERT INTO accounts (id, name, phone_office, assigned_user_id, deleted)"
                  " VALUES ('bench-account-1', 'Spreewald', '030 555555', 'seed_sally_id', 0)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--port", type=int, default=14573)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between calls (0: back to back, the call's own writes compete)")
    args = parser.parse_args()
    database, url = create_database()
    proc = None
    try:
        seed(database)
        proc, _ = start_server(url, args.port)
        latencies, statuses = {}, {}
        started = time.monotonic()
        for n in range(args.calls):
            caller = CALLERS[n % len(CALLERS)]
            first, _ = SimulatedCall(("127.0.0.1", args.port), "incoming", number="4930123400",
                                     callerid=caller, uniqueid="%d.%d" % (1795700000, n)).run(dial=DIAL)
            status = first.variables.get("CRM_STATUS", "?")
            if args.pause:
                time.sleep(args.pause)
            latencies.setdefault(status, []).append(first.elapsed * 1000)
            statuses[status] = statuses.get(status, 0) + 1
        wall = time.monotonic() - started
        time.sleep(1.0)
        report(args.calls, wall, latencies, rss_mb(proc.pid))
        rows = int(__import__("subprocess").check_output(
            ["mariadb", "-h127.0.0.1", "-uroot", "-N", database, "-e", "SELECT COUNT(*) FROM calls"]))
        print("Call rows written: %d of %d" % (rows, args.calls))
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)
        drop_database(database)


def report(calls, wall, latencies, rss):
    everything = [v for values in latencies.values() for v in values]
    print("%d sequential calls (incoming + hangup) in %.1f s; server RSS %.0f MB" % (calls, wall, rss))
    print("%-10s %6s %8s %8s %8s %8s" % ("status", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms"))
    for status, values in sorted(latencies.items()) + [("all", everything)]:
        print("%-10s %6d %8.2f %8.2f %8.2f %8.2f" % (status, len(values), percentile(values, 50),
              percentile(values, 95), percentile(values, 99), max(values)))


if __name__ == "__main__":
    main()
