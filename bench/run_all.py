"""The whole benchmark suite in one command, one table at the end (issue #3).

Steps, each a script of its own (run as a subprocess, so each has the process it has in
production: gevent-patched or not, its own memory):

1. generate.py      a new crmagi_bench_* database with --contacts/--accounts/--leads rows
                    (or --database DB --samples FILE: an already generated one);
2. lookup_compare   crmagi's lookup before the index exists (its scan) and the scan queries
                    of YAAI, OCA and Superfecta, on the same numbers;
3. index            ``python -m agi.cli index install -c INI`` and ``... index rebuild``, timed
                    (when the CLI is not there: "index not available: scan path measured");
4. lookup_compare   crmagi's lookup through the index (--iterations lookups); the ratios of
                    every scan to it;
5. load.py          incoming + hangup cycles at each of --rates calls/s for --duration s against
                    ``crmagi serve`` with --workers processes, then (unless --no-max) a ramp of
                    --ramp-duration s steps from --ramp-start, up (or down) by --ramp-step, to the
                    highest rate sustained (>= 95 % of the target, no errors, every Call row
                    finished), measured again for --duration s (--profile: with the server profiled);
6. the table (stdout), the JSON report (--json), and the database dropped (unless --keep).

    python bench/run_all.py                       # full size: 1M contacts / 300k accounts / 1M leads
    python bench/run_all.py --small               # 20k / 6k / 20k, short load runs: a few minutes
    python bench/run_all.py --contacts 2000 --accounts 600 --leads 2000 --iterations 20 \\
        --scan-iterations 2 --rates 20 --duration 3 --no-max --json /tmp/smoke.json   # CI smoke size
    # a database generated (and indexed) before, the server profiled with py-spy at the max rate:
    python bench/run_all.py --database crmagi_bench_1a2b3c4d --samples FILE --index reuse --profile pyspy
    python bench/run_all.py --table-from report.json          # the table of an earlier --json report
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO, drop_database, index_cli_available, machine, write_config  # noqa: E402

BENCH = Path(__file__).resolve().parent


def _run_script(name, args, json_path, log):
    cmd = [sys.executable, str(BENCH / name)] + [str(a) for a in args] + ["--json", str(json_path)]
    log("$ " + " ".join(cmd[1:]))
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in result.stdout.splitlines():
        log("  " + line)
    if result.returncode != 0:
        raise RuntimeError("%s failed (exit %d)" % (name, result.returncode))
    report = json.loads(Path(json_path).read_text())
    report["_seconds"] = time.monotonic() - started
    return report


def _cli(args, log, timeout=None):
    cmd = [sys.executable, "-m", "agi.cli"] + args
    log("$ crmagi " + " ".join(args))
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    seconds = time.monotonic() - started
    for line in result.stdout.splitlines()[-15:]:
        log("  " + line.split("\r")[-1])
    return result.returncode, seconds, result.stdout


def run(args, log):
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "command": " ".join([os.path.relpath(sys.argv[0], str(REPO))] + sys.argv[1:]), "steps": {}}
    work = Path(tempfile.mkdtemp(prefix="crmagi-runall-"))
    database, created = args.database, False
    try:
        # 1. data
        if database:
            if not args.samples:
                raise SystemExit("--database needs --samples (the sample file generate.py wrote for it)")
            samples = args.samples
            meta = json.loads(Path(samples).read_text(encoding="utf-8")).get("meta", {})
            report["generate"] = dict(meta, reused=True)
        else:
            gen = _run_script("generate.py", [
                "--contacts", args.contacts, "--accounts", args.accounts, "--leads", args.leads,
                "--users", args.users, "--region", args.region, "--seed", args.seed,
                "--samples-count", min(20_000, max(200, (args.contacts + args.accounts + args.leads) // 2)),
                "--absent-count", min(5_000, max(50, (args.contacts + args.accounts + args.leads) // 8)),
                "--samples", work / "samples.json"], work / "generate.json", log)
            database, created, samples = gen["database"], gen["created"], gen["samples"]
            report["generate"] = gen
        report["database"] = database
        url = "mysql+pymysql://root@127.0.0.1:3306/" + database
        ini = write_config(url, work / "crmagi.ini", region=report["generate"].get("region", args.region))

        # 2. lookups before the index: crmagi's scan and the other integrations' scans
        lookup_args = ["--database", database, "--samples", samples, "--scan-iterations", args.scan_iterations,
                       "--crmagi-scan-iterations", args.crmagi_scan_iterations, "--seed", args.seed]
        scans = _run_script("lookup_compare.py", lookup_args + ["--iterations", args.iterations],
                            work / "lookup_scan.json", log)
        report["lookup_before_index"] = scans

        # 3. the index
        index = {"available": index_cli_available()}
        if args.index == "reuse":
            index["note"] = "reused: installed and rebuilt on this database before this run (crmagi path: %s)" % (
                scans["crmagi_path"])
            if scans["crmagi_path"] == "index":
                index["rebuild_exit"] = 0
        elif index["available"] and args.index == "install":
            code, seconds, out = _cli(["index", "install", "-c", str(ini)], log)
            index.update(install_exit=code, install_seconds=seconds)
            if code == 0:
                code, seconds, out = _cli(["index", "rebuild", "-c", str(ini)], log)
                index.update(rebuild_exit=code, rebuild_seconds=seconds, rebuild_output=out.strip()[-500:])
            if code == 0 and args.index_check:
                code, seconds, out = _cli(["index", "check", "-c", str(ini)], log)
                index.update(check_exit=code, check_seconds=seconds, check_output=out.strip()[-500:])
            index["note"] = "installed and rebuilt" if index.get("rebuild_exit") == 0 else "index install/rebuild failed"
        elif args.index == "skip":
            index["note"] = "skipped (--index skip): scan path measured"
        else:
            index["note"] = "index not available (no `crmagi index` command): scan path measured"
        log("index: " + index["note"])
        report["index"] = index

        # 4. crmagi through the index
        if index.get("rebuild_exit") == 0 and args.index != "reuse":
            after = _run_script("lookup_compare.py", lookup_args + ["--iterations", args.iterations,
                                                                    "--methods", "crmagi"],
                                work / "lookup_index.json", log)
            report["lookup_after_index"] = after
            report["lookup"] = merge_lookups(scans, after)
        else:
            report["lookup"] = merge_lookups(scans, {"results": []})
        if args.lookup_from:      # rows measured in an earlier run (e.g. crmagi's scan before the index)
            have = {r["method"] for r in report["lookup"]}
            for path_ in args.lookup_from:
                for row in json.loads(Path(path_).read_text())["results"]:
                    if row["method"] not in have:
                        row["from"] = str(path_)
                        report["lookup"].append(row)
                        have.add(row["method"])
            report["lookup"] = merge_lookups({"results": report["lookup"]}, {"results": []})
        path = report["lookup"][0]["path"] if report["lookup"] else "scan"
        crmagi_p50 = report["lookup"][0]["p50_ms"] if report["lookup"] else 0

        # 5. load
        loads = []
        load_args = ["--database", database, "--samples", samples, "--workers", args.workers,
                     "--procs", args.procs, "--concurrency", args.concurrency, "--seed", args.seed,
                     "--port", args.port]
        report["load"] = loads
        if path != "index" and crmagi_p50 > 1000:
            # Every call would wait out [agi] timeout while the scans pile up in MariaDB (and take
            # the connections other clients of this server need): nothing to measure.
            report["load_note"] = ("load skipped: crmagi's lookup is on its scan path here (p50 %.0f ms), so every "
                                   "call would answer CRM_STATUS=error after [agi] timeout" % crmagi_p50)
            log(report["load_note"])
            return report
        for rate in args.rates:
            loads.append(_run_load(load_args + ["--rate", rate, "--duration", args.duration],
                                   work / ("load_%g.json" % rate), log, rate, args.duration))
        if not args.no_max:
            best = _ramp(args, load_args, work, log, loads)
            if best is not None:
                final = _run_load(load_args + ["--rate", best, "--duration", args.duration] +
                                  (["--profile", args.profile] if args.profile else []),
                                  work / "load_max.json", log, best, args.duration)
                final["max"] = True
                final["sustained"] = sustained(final)
                loads.append(final)
        report["load"] = loads
        return report
    finally:
        if created and not args.keep:
            drop_database(database)
            log("dropped database %s" % database)
        elif database:
            log("kept database %s" % database)


def _run_load(load_args, json_path, log, rate, duration):
    """load.py; a failed run is recorded (and shown in the table), not fatal to the suite."""
    try:
        return _run_script("load.py", load_args, json_path, log)
    except RuntimeError as exc:
        return {"failed": str(exc), "target_rate": rate, "duration_s": duration}


def _ramp(args, load_args, work, log, loads):
    """Steps of --ramp-duration s: up by --ramp-step from --ramp-start while sustained, or down
    from it until sustained; returns the highest sustained rate (None: not even the lowest)."""
    def step(rate):
        result = _run_load(load_args + ["--rate", rate, "--duration", args.ramp_duration],
                           work / ("ramp_%g.json" % rate), log, rate, args.ramp_duration)
        result["ramp"] = True
        loads.append(result)
        return sustained(result)

    rate = args.ramp_start
    if step(rate):
        best = rate
        while rate + args.ramp_step <= args.ramp_max:
            rate += args.ramp_step
            if not step(rate):
                break
            best = rate
        return best
    while rate - args.ramp_step >= args.ramp_step:
        rate -= args.ramp_step
        if step(rate):
            return rate
    return None


def sustained(load):
    if load.get("failed"):
        return False
    return (load["calls_per_s"] >= 0.95 * load["target_rate"] and load["error_count"] == 0
            and (load.get("calls_written") or {}).get("finished", load["calls_completed"]) >= load["calls_completed"])


def merge_lookups(before, after):
    rows = [r for r in after["results"] if r["method"].startswith("crmagi")]
    rows += [r for r in before["results"] if r["method"] not in {x["method"] for x in rows}]
    order = {"crmagi (index)": 0, "crmagi (scan)": 1}
    rows.sort(key=lambda r: order.get(r["method"], 2))
    base = rows[0] if rows and rows[0]["method"].startswith("crmagi") else None
    for row in rows:
        row["ratio_p50"] = row["p50_ms"] / base["p50_ms"] if base and base["p50_ms"] > 0 else None
        row["ratio_p99"] = row["p99_ms"] / base["p99_ms"] if base and base["p99_ms"] > 0 else None
    return rows


def _fmt_ratio(value):
    if not value:
        return "-"
    return "%.0fx" % value if value >= 10 else "%.2fx" % value


def table(report):
    lines = []
    gen = report["generate"]
    rows = gen.get("rows", {})
    lines.append("crmagi benchmark, %s, %s" % (report["date"], report["machine"]))
    lines.append("command: python %s" % report["command"])
    lines.append("data: %s contacts / %s accounts / %s leads (+%s accounts_contacts, %s users), region %s, seed %s%s" % (
        *("{:,}".format(rows.get(k, 0)) for k in ("contacts", "accounts", "leads", "accounts_contacts", "users")),
        gen.get("region"), gen.get("seed"), " (reused database)" if gen.get("reused") else ""))
    if "seconds" in gen:
        lines.append("generate: {:,} rows, {:,} phone numbers ({:,} duplicates) in {:.1f} s = {:,} rows/s "
                     "(load {:.1f} s + secondary indexes {:.1f} s){}".format(
                         gen["total_rows"], gen["phone_numbers"], gen["duplicate_numbers"], gen["seconds"],
                         gen["rows_per_second"], gen["load_seconds"], gen["index_seconds"],
                         ", generated before this run" if gen.get("reused") else ""))
    idx = report["index"]
    if idx.get("rebuild_exit") == 0 and "install_seconds" in idx:
        lines.append("index: install %.1f s, rebuild %.1f s%s" % (
            idx["install_seconds"], idx["rebuild_seconds"],
            ", check %.1f s (exit %d)" % (idx["check_seconds"], idx["check_exit"]) if "check_exit" in idx else ""))
    else:
        lines.append("index: " + idx["note"])
    lines.append("")
    lines.append("%-16s %6s %9s %9s %9s %10s %10s %6s %6s %6s %6s %6s" % (
        "lookup", "n", "p50 ms", "p99 ms", "max ms", "x p50", "x p99", "right", "wrong", "missed", "false+",
        "errors"))
    for r in report["lookup"]:
        lines.append("%-16s %6d %9.3f %9.3f %9.3f %10s %10s %6d %6d %6d %6d %6d" % (
            r["method"], r["n"], r["p50_ms"], r["p99_ms"], r["max_ms"], _fmt_ratio(r.get("ratio_p50")),
            _fmt_ratio(r.get("ratio_p99")), r["right"], r["wrong"], r["missed"], r["false+"], r.get("errors", 0)))
    for r in report["lookup"]:
        if r.get("error_example"):
            lines.append("  %s: %d errors, e.g. %s" % (r["method"], r["errors"], r["error_example"][:200]))
    lines.append("")
    lines.append("%-12s %7s %7s %8s | %-27s | %-27s | %6s | %-22s | %6s | %6s | %6s" % (
        "load", "target", "calls/s", "calls/min", "incoming p50/p95/p99/max ms", "hangup p50/p95/p99/max ms",
        "errors", "server CPU cores ms/call", "RSS MB", "DB CPU", "other"))
    if report.get("load_note"):
        lines.append(report["load_note"])
    for l in report["load"]:
        kind = "max" if l.get("max") else "ramp" if l.get("ramp") else "rate"
        if l.get("failed"):
            lines.append("%-12s %7g  FAILED: %s" % ("%s %gs" % (kind, l["duration_s"]), l["target_rate"], l["failed"]))
            continue
        inc, hup = l["incoming"], l["hangup"]
        lines.append("%-12s %7g %7.1f %8.0f | %6.1f %6.1f %6.1f %7.1f | %6.1f %6.1f %6.1f %7.1f | %6d | %5.2f cores %6.2f ms | %6.0f | %5.1fs | %5.1fs" % (
            "%s %gs" % (kind, l["duration_s"]), l["target_rate"], l["calls_per_s"], l["calls_per_min"],
            inc["p50_ms"], inc["p95_ms"], inc["p99_ms"], inc["max_ms"], hup["p50_ms"], hup["p95_ms"],
            hup["p99_ms"], hup["max_ms"], l["error_count"], l["server_cpu_cores"] or 0,
            l["server_cpu_ms_per_call"] or 0, l["server_rss_peak_mb"], l["mariadb_cpu_s"], l.get("other_cpu_s", 0)))
    for l in report["load"]:
        if l.get("error_count"):
            lines.append("  errors at %g calls/s: %s" % (l["target_rate"], "; ".join(
                "%s %d (%s)" % (k, v, l["error_examples"].get(k, "")) for k, v in l["errors"].items())))
    return "\n".join(lines)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="20k/6k/20k rows, 500 lookups, 15 s loads")
    p.add_argument("--database", help="use this already generated database (with --samples); not dropped")
    p.add_argument("--samples", help="its sample file")
    p.add_argument("--contacts", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=300_000)
    p.add_argument("--leads", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--region", default="DE", choices=("DE", "RU"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--iterations", type=int, default=2000, help="crmagi lookups through the index")
    p.add_argument("--scan-iterations", type=int, default=5, help="lookups per scan method")
    p.add_argument("--crmagi-scan-iterations", type=int, default=10, help="crmagi lookups before the index")
    p.add_argument("--index", choices=("install", "reuse", "skip"), default="install",
                   help="install: `crmagi index install` + `rebuild` (timed); reuse: the database has it already; "
                        "skip: measure the scan path")
    p.add_argument("--no-index-check", dest="index_check", action="store_false",
                   help="skip `crmagi index check` after the rebuild")
    p.add_argument("--lookup-from", action="append",
                   help="lookup_compare JSON of an earlier run whose rows (e.g. crmagi (scan)) are added")
    p.add_argument("--rates", default="50,200", help="comma list of calls/s for the fixed-rate load runs")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per load run")
    p.add_argument("--no-max", action="store_true", help="skip the ramp to the highest sustained rate")
    p.add_argument("--ramp-start", type=float, default=300.0, help="first rate of the ramp (calls/s)")
    p.add_argument("--ramp-step", type=float, default=50.0)
    p.add_argument("--ramp-max", type=float, default=1500.0)
    p.add_argument("--ramp-duration", type=float, default=15.0)
    p.add_argument("--workers", type=int, default=2, help="[agi] workers of crmagi serve")
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--port", type=int, default=14600, help="port of the crmagi serve the load runs start")
    p.add_argument("--profile", choices=("cprofile", "pyspy"), help="profile the server in the max-rate run")
    p.add_argument("--keep", action="store_true", help="keep the generated database")
    p.add_argument("--json", help="write the whole report as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="only the final table")
    p.add_argument("--table-from", help="print the table of an earlier --json report and exit")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())))
        return
    if args.small:
        args.contacts, args.accounts, args.leads = 20_000, 6_000, 20_000
        args.iterations, args.duration, args.ramp_duration = min(args.iterations, 500), min(args.duration, 15), 8
    args.rates = [float(r) for r in str(args.rates).split(",") if r.strip()]

    def log(line):
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    report = run(args, log)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    report["table"] = table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    print(report["table"])


if __name__ == "__main__":
    main()
