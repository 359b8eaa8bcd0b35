"""Every figure of issue #12 (the call path at the hardware's limit) from one command.

Steps, each a bench/load.py or bench/lookup_compare.py run against ``crmagi serve`` with
``--workers`` workers on ``--database`` (a generate.py database with the phone index
installed and rebuilt), every call a full cycle with its AMI events played by the fake AMI:

1. ``count``: ``--count-rate`` calls/s for ``--count-duration`` s with MariaDB's general log on:
   round trips and statements per call, by verb.
2. ``rates``: each of ``--rates`` (default 100, 200, 400 calls/s) for ``--duration`` s: incoming
   p50/p99, errors, CPU per call of crmagi, MariaDB, the generator and the AMI feed, TCP counters.
3. ``saturation``: ``--saturation-rates`` (150 ... 1,000) in turn for ``--saturation-duration`` s (default 60),
   until one is not sustained (achieved < 97 % of the target, or any error): the highest
   sustained rate.
4. ``lookup``: ``lookup_compare.py --methods crmagi`` (p50/p99 of one lookup) on
   ``--lookup-database`` (the 1M/300k/1M one; default ``--database``).
5. ``memory``: ``--long-rate`` calls/s for ``--long-duration`` s (default 300/s for 600 s; 0
   skips it), crmagi's RSS sampled every 10 s.

The box's other load is stated for every step (CPU seconds the machine spent outside crmagi,
MariaDB and the generator): CPU per call is the figure that stays comparable on a busy box,
latency percentiles and the saturation rate are not.

    python bench/call_path.py --database DB --samples FILE --lookup-database BIG --lookup-samples BIGFILE \
        --json /tmp/call_path.json
    python bench/call_path.py --database DB --samples FILE --quick         # 10 s steps, no long run
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _script(name, args, log):
    out = Path(tempfile.mkstemp(prefix="crmagi-call-path-", suffix=".json")[1])
    cmd = [sys.executable, str(BENCH / name)] + [str(a) for a in args] + ["--json", str(out)]
    log("$ python bench/%s" % " ".join(str(c) for c in cmd[1:]).replace(str(BENCH) + "/", ""))
    result = subprocess.run(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in result.stdout.splitlines():
        log("    " + line)
    if result.returncode != 0:
        raise RuntimeError("%s failed (exit %d)" % (name, result.returncode))
    report = json.loads(out.read_text())
    out.unlink()
    for key in ("server_profile", "generator_profile"):
        report.pop(key, None)
    return report


def _load(args, log, rate, duration, *extra):
    base = ["--database", args.database, "--samples", args.samples, "--workers", args.workers, "--procs", args.procs,
            "--rate", rate, "--duration", duration, "--port", args.port]
    return _script("load.py", base + list(extra), log)


def sustained(run, rate):
    """Kept up, with no error a caller saw and none in the server's log (before, a step that
    dropped live updates, "effects queue full", counted as sustained)."""
    return (run["calls_per_s"] >= 0.97 * rate and run["error_count"] == 0 and run["late_starts"] == 0
            and not run.get("server_log_errors"))


def summary(run):
    """The figures of one load run that the table shows."""
    return {"target": run["target_rate"], "achieved": round(run["calls_per_s"], 1),
            "incoming_p50_ms": round(run["incoming"]["p50_ms"], 2), "incoming_p99_ms": round(run["incoming"]["p99_ms"], 2),
            "incoming_max_ms": round(run["incoming"]["max_ms"], 2), "errors": run["error_count"],
            "crmagi_ms_per_call": run["server_cpu_ms_per_call"], "mariadb_ms_per_call": run["mariadb_cpu_ms_per_call"],
            "generator_ms_per_call": run["generator_cpu_ms_per_call"],
            "feed_ms_per_call": (1000.0 * run["ami"]["feed_cpu_s"] / run["calls_completed"]
                                 if run.get("ami") and run["calls_completed"] else None),
            "other_cpu_s": round(run["other_cpu_s"], 1), "tcp": run["tcp"],
            "written": run.get("calls_written")}


def run(args, log):
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "workers": args.workers,
              "load_avg_before": os.getloadavg()}
    counted = _load(args, log, args.count_rate, args.count_duration, "--count-sql")
    report["count"] = dict(summary(counted), sql=counted["sql"])
    report["rates"] = [summary(_load(args, log, rate, args.duration)) for rate in args.rates]
    report["saturation"] = []
    for rate in args.saturation_rates:
        run_ = _load(args, log, rate, args.saturation_duration)
        report["saturation"].append(dict(summary(run_), sustained=sustained(run_, rate)))
        if not sustained(run_, rate):
            break
    held = [s["target"] for s in report["saturation"] if s["sustained"]]
    report["max_sustained"] = max(held) if held else None
    if args.lookup_iterations:
        lookup = _script("lookup_compare.py", ["--database", args.lookup_database or args.database,
                                               "--samples", args.lookup_samples or args.samples,
                                               "--methods", "crmagi", "--iterations", args.lookup_iterations], log)
        report["lookup"] = {key: lookup["results"][0][key] for key in ("method", "n", "p50_ms", "p99_ms", "max_ms")}
        report["lookup"]["database"] = args.lookup_database or args.database
    if args.long_duration:
        long_run = _load(args, log, args.long_rate, args.long_duration, "--rss-interval", 10)
        report["memory"] = dict(summary(long_run), rss=long_run["rss"], rss_samples=long_run["rss_samples"])
    report["load_avg_after"] = os.getloadavg()
    return report


def table(report):
    lines = ["", "call path (%s, %d workers)" % (report["date"], report["workers"])]
    sql = report["count"]["sql"]
    lines.append("  round trips / statements per call: %s / %s  (%s)" % (
        sql["round_trips_per_call"], sql["statements_per_call"],
        ", ".join("%s %s" % kv for kv in sql["per_call_by_verb"].items())))
    lines.append("  %-10s %-9s %-22s %-7s %-38s %s" % ("target/s", "achieved", "incoming p50/p99/max ms", "errors",
                                                      "CPU ms/call crmagi/MariaDB/gen/feed", "other CPU s, TCP"))
    for row in [report["count"]] + report["rates"] + report["saturation"] + (
            [report["memory"]] if report.get("memory") else []):
        fmt = lambda v: "%.2f" % v if v is not None else "-"      # noqa: E731
        lines.append("  %-10s %-9s %-22s %-7s %-38s %s %s" % (
            row["target"], row["achieved"], "%s/%s/%s" % (row["incoming_p50_ms"], row["incoming_p99_ms"],
                                                          row["incoming_max_ms"]),
            row["errors"], "/".join(fmt(row[k]) for k in ("crmagi_ms_per_call", "mariadb_ms_per_call",
                                                            "generator_ms_per_call", "feed_ms_per_call")),
            row["other_cpu_s"], {k: v for k, v in row["tcp"].items() if v}))
    lines.append("  highest sustained rate: %s calls/s" % report["max_sustained"])
    if report.get("lookup"):
        lines.append("  lookup on %(database)s: p50 %(p50_ms).3f ms, p99 %(p99_ms).3f ms (n=%(n)d)" % report["lookup"])
    if report.get("memory"):
        lines.append("  RSS over %(seconds).0f s: %(start_mb).1f -> %(end_mb).1f MB (%(growth_mb)+.1f), peak %(peak_mb).1f"
                     % report["memory"]["rss"])
    return "\n".join(lines)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", required=True, help="generate.py database, phone index rebuilt")
    p.add_argument("--samples", required=True, help="its sample file")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--port", type=int, default=14600)
    p.add_argument("--count-rate", type=float, default=50.0)
    p.add_argument("--count-duration", type=float, default=10.0)
    p.add_argument("--rates", type=float, nargs="+", default=[100.0, 200.0, 400.0])
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--saturation-rates", type=float, nargs="*",
                   default=[150.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 1000.0])
    p.add_argument("--saturation-duration", type=float, default=60.0)
    p.add_argument("--lookup-database", help="the 1M/300k/1M database (default: --database)")
    p.add_argument("--lookup-samples", help="its sample file")
    p.add_argument("--lookup-iterations", type=int, default=3000, help="0 skips the lookup step")
    p.add_argument("--long-rate", type=float, default=300.0)
    p.add_argument("--long-duration", type=float, default=600.0, help="0 skips the memory run")
    p.add_argument("--quick", action="store_true", help="10 s steps, 20 s saturation steps, no memory run")
    p.add_argument("--json", help="write the report here")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.quick:
        args.duration, args.saturation_duration, args.long_duration = 10.0, 20.0, 0.0
    report = run(args, lambda line: print(line, flush=True))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
