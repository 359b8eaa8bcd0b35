"""bench/load.py's report: the generator processes' raw results and the parent's readings
(CPU of crmagi, MariaDB and the generator, RSS samples, nstat counters, SQL counts) made
into one dict, and printed; profile summaries (cProfile, py-spy)."""
import io
import pstats
import sys
from pathlib import Path

from common import percentile

def _profile_text(path, limit=30):
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def _pyspy_summary(raw_path, limit=30):
    """Self and total sample counts per frame from py-spy's collapsed stacks."""
    own, total, samples = {}, {}, 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        count = int(count)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = ["py-spy: %d samples" % samples, "self%   frame"]
    lines += ["%5.1f%%  %s" % (100.0 * n / max(1, samples), f) for f, n in
              sorted(own.items(), key=lambda kv: -kv[1])[:limit]]
    lines += ["", "total%  frame"]
    lines += ["%5.1f%%  %s" % (100.0 * n / max(1, samples), f) for f, n in
              sorted(total.items(), key=lambda kv: -kv[1])[:limit]]
    return "\n".join(lines)



def aggregate(args, results, addresses, pids, server_cpu, server_cpu_with_drain, db_cpu, rss_end, rss_peak,
              start_at, wall_end, written):
    incoming = [v for r in results for v in r["incoming_ms"]]
    hangup = [v for r in results for v in r["hangup_ms"]]
    completed = sum(r["completed"] for r in results)
    started = sum(r["started"] for r in results)
    errors, examples, statuses = {}, {}, {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r["error_examples"].items():
            examples.setdefault(k, v)
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    firsts = [r["first_start"] for r in results if r["first_start"]]
    lasts = [r["last_end"] for r in results if r["last_end"]]
    span = (max(lasts) - min(firsts)) if firsts and lasts else float("nan")
    achieved = completed / span if span and span == span and span > 0 else 0.0
    gen_cpu = sum(r["cpu_seconds"] for r in results)

    def stats(values):
        return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
                "p99_ms": percentile(values, 99), "max_ms": max(values) if values else float("nan")}

    report = {
        "target_rate": args.rate, "duration_s": args.duration, "concurrency": args.concurrency,
        "procs": args.procs, "engine": args.engine, "servers": ["%s:%d" % a for a in addresses],
        "server_workers": args.workers if not args.address else None,
        "server_pids": pids, "calls_started": started, "calls_completed": completed,
        "calls_per_s": achieved, "calls_per_min": achieved * 60.0, "span_s": span,
        "late_starts": sum(r["late"] for r in results), "max_start_lag_ms": max(r["max_lag_ms"] for r in results),
        "incoming": stats(incoming), "hangup": stats(hangup), "crm_status": statuses,
        "errors": errors, "error_count": sum(errors.values()), "error_examples": examples,
        "server_cpu_s": server_cpu, "server_cpu_s_incl_drain": server_cpu_with_drain,
        "server_cpu_ms_per_call": 1000.0 * server_cpu_with_drain / completed if completed else None,
        "server_cpu_cores": server_cpu / span if span and span == span and span > 0 else None,
        "server_rss_mb": rss_end, "server_rss_peak_mb": rss_peak, "mariadb_cpu_s": db_cpu,
        "mariadb_cpu_ms_per_call": 1000.0 * db_cpu / completed if completed else None,
        "generator_cpu_s": gen_cpu, "generator_cpu_ms_per_call": 1000.0 * gen_cpu / completed if completed else None,
        "calls_written": written,
    }
    profiles = [r.get("generator_profile") for r in results if r.get("generator_profile")]
    if profiles:
        report["generator_profile"] = profiles[0]
    return report


def print_report(report, stream=sys.stdout):
    r = report
    print("load: target %g calls/s for %gs, %d generator proc(s) (%s), server(s) %s%s, pids %s" % (
        r["target_rate"], r["duration_s"], r["procs"], r["engine"], ", ".join(r["servers"]),
        " (%d workers)" % r["server_workers"] if r.get("server_workers", 1) and r["server_workers"] > 1 else "",
        r["server_pids"]), file=stream)
    if r.get("ablate"):
        print("  crmagi without: %s (bench/ablate.py: not a server for real calls)" % r["ablate"], file=stream)
    print("  calls: %d started, %d completed, %.1f calls/s = %.0f calls/min (late starts %d, max lag %.1f ms)" % (
        r["calls_started"], r["calls_completed"], r["calls_per_s"], r["calls_per_min"], r["late_starts"],
        r["max_start_lag_ms"]), file=stream)
    for name in ("incoming", "hangup"):
        s = r[name]
        print("  %-9s answer ms: p50 %.2f  p95 %.2f  p99 %.2f  max %.2f  (n=%d)" % (
            name, s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"], s["n"]), file=stream)
    print("  CRM_STATUS: %s" % ", ".join("%s %d" % kv for kv in sorted(r["crm_status"].items())), file=stream)
    print("  errors: %d %s" % (r["error_count"], "; ".join("%s %d (e.g. %s)" % (k, v, r["error_examples"].get(k, ""))
                                                           for k, v in r["errors"].items())), file=stream)
    ms = lambda v: "%.2f" % v if v is not None else "-"      # noqa: E731
    print("  CPU per call: crmagi %s ms (%.1f s, %.2f cores, incl. the writes' drain), MariaDB %s ms, generator %s ms%s"
          % (ms(r["server_cpu_ms_per_call"]), r["server_cpu_s"], r["server_cpu_cores"] or 0,
             ms(r["mariadb_cpu_ms_per_call"]), ms(r["generator_cpu_ms_per_call"]),
             ", AMI feed %s ms" % ms(1000.0 * r["ami"]["feed_cpu_s"] / r["calls_completed"])
             if r.get("ami") and r["calls_completed"] else ""), file=stream)
    if len(r.get("server_cpu_s_each") or ()) > 1:
        print("  crmagi CPU s per process (parent first): %s" % " / ".join("%.1f" % v for v in r["server_cpu_s_each"]),
              file=stream)
    rss = r.get("rss") or {}
    print("  server RSS: %.0f MB at the end, peak %.0f%s" % (
        r["server_rss_mb"], r["server_rss_peak_mb"],
        ", first/last %.0fs: %.1f -> %.1f MB (%+.1f)" % (min(60, rss["seconds"] / 3), rss["start_mb"], rss["end_mb"],
                                                        rss["growth_mb"]) if rss.get("samples") else ""), file=stream)
    if r.get("ami"):
        print("  AMI feed: %(scenario)s, %(calls_streamed)d calls streamed, %(calls_unseen)d while nobody was logged in"
              % r["ami"], file=stream)
    if r.get("tcp"):
        print("  TCP counters (whole box): %s" % ", ".join("%s %d" % kv for kv in r["tcp"].items()), file=stream)
    if r.get("sql"):
        q = r["sql"]
        print("  SQL: %s round trips and %s statements per call (%d connections; %s)" % (
            q["round_trips_per_call"], q["statements_per_call"], q["connections"],
            ", ".join("%s %s" % kv for kv in q["per_call_by_verb"].items())), file=stream)
    if r.get("machine_busy_s") is not None:
        print("  machine: %.1f CPU s busy in all, %.1f s of it by other processes" % (
            r["machine_busy_s"], r["other_cpu_s"]), file=stream)
    if r.get("calls_written"):
        w = r["calls_written"]
        if w.get("error"):
            print("  Call rows: not counted (%s)" % w["error"], file=stream)
        else:
            print("  Call rows: %d written, %d finished, of %d completed calls%s" % (
                w["rows"], w["finished"], w["completed_calls"],
                "; after the stop %d with their answer, %d with their recording (AMI feed)" % (
                    w["answered"], w["recorded"]) if "answered" in w else ""), file=stream)
    left = r.get("spool_left")
    if left and (left["pending"] or left["dead"]):
        print("  spool left at stop: %d op(s) pending (%s), %d dead letter(s)" % (
            left["pending"], ", ".join("%s %d" % kv for kv in sorted(left["kinds"].items())), left["dead"]),
              file=stream)
    if r.get("server_log_warnings"):
        print("  server log: %d warnings/errors, e.g. %s" % (r["server_log_warnings"], r["server_log_examples"][:2]),
              file=stream)
