"""Latency of /metrics and /healthz while bench/load.py drives calls (issue 9, section 5).

It fills a small SuiteCRM database (bench/generate.py, phone index installed), or takes
``--database`` with its ``--samples``, and runs bench/load.py on it: `crmagi serve` with
``[metrics] listen`` on ``--metrics-port`` (``--workers`` > 1: the parent serves the merged
view of all workers), full incoming + hangup calls at ``--rate`` calls/s for
``--duration`` s.  Meanwhile scraper threads in this process fetch /metrics and /healthz in
turn every ``--interval`` s, each on a new connection as Prometheus or a load balancer
does, and time every answer, from connect to the last byte.

Only the answers fetched while calls were being handled count (from the first to the last
scrape that saw crmagi_calls_total move); the report gives, per endpoint, n, p50 / p99 /
max in ms, statuses other than 200 (with a 503's reasons), and load.py's own summary.

    python bench/metrics_latency.py --rate 200 --duration 30
    python bench/metrics_latency.py --rate 200 --duration 30 --workers 2
    python bench/metrics_latency.py --database crmagi_bench_1a2b3c4d --samples FILE --rate 300
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO, create_database, drop_database, percentile, write_config  # noqa: E402

BENCH = Path(__file__).resolve().parent


def fetch(port, path, timeout):
    """(status, body, seconds): one GET on a new connection."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, body, time.perf_counter() - started
    finally:
        conn.close()


def calls_seen(text):
    """Sum of crmagi_calls_total in a /metrics answer (no parser: this process stays light)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("crmagi_calls_total{"))


class Scraper(threading.Thread):
    def __init__(self, port, path, interval, timeout, stop):
        super().__init__(daemon=True)
        self.port, self.path, self.interval, self.timeout, self.stop = port, path, interval, timeout, stop
        # (started at, seconds, status or exception name, calls seen or None, body if not 200)
        self.samples = []

    def run(self):
        while not self.stop.is_set():
            at, started = time.monotonic(), time.perf_counter()
            try:
                status, body, seconds = fetch(self.port, self.path, self.timeout)
            except OSError as exc:      # refused before the server listens; in the window: reported
                self.samples.append((at, time.perf_counter() - started, type(exc).__name__, None, str(exc)))
            else:
                text = body.decode("utf-8", "replace")
                calls = calls_seen(text) if self.path == "/metrics" and status == 200 else None
                self.samples.append((at, seconds, status, calls, text[:300] if status != 200 else ""))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - at)))


def load_window(metrics_samples):
    """(first, last) monotonic time of the scrapes around which crmagi_calls_total moved."""
    seen = [(at, calls) for at, _, _, calls, _ in metrics_samples if calls is not None]
    moved = [at for (at, calls), (_, before) in zip(seen[1:], seen) if calls > before]
    if not moved:
        return None
    earlier = [at for at, _ in seen if at < moved[0]]
    return (earlier[-1] if earlier else moved[0]), moved[-1]


def summarise(scraper, window):
    rows = [s for s in scraper.samples if window and window[0] <= s[0] <= window[1]]
    times = [s[1] * 1000.0 for s in rows if isinstance(s[2], int)]
    statuses = Counter(s[2] for s in rows)
    return {"path": scraper.path, "n": len(rows), "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
            "max_ms": max(times) if times else float("nan"), "statuses": dict(statuses),
            "over_10ms": sum(1 for t in times if t > 10.0),
            "non_200_example": next((s[4] for s in rows if s[2] != 200), "")}


def prepare(args):
    """(database, samples, made here): a small generated CRM with the phone index."""
    if args.database:
        if not args.samples:
            raise SystemExit("--database needs --samples (its generate.py sample file)")
        return args.database, args.samples, False
    name, url = create_database()
    samples = str(Path(tempfile.mkdtemp(prefix="crmagi-metrics-bench-")) / "samples.json")
    subprocess.run([sys.executable, str(BENCH / "generate.py"), "--database", name, "--contacts", str(args.contacts),
                    "--accounts", str(args.contacts * 3 // 10), "--leads", str(args.contacts), "--samples", samples],
                   check=True, cwd=str(REPO), stdout=subprocess.DEVNULL)
    ini = write_config(url, Path(samples).parent / "index.ini")
    for step in ("install", "rebuild"):
        subprocess.run([sys.executable, "-m", "agi.cli", "index", step, "-c", str(ini)], check=True, cwd=str(REPO),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return name, samples, True


def run(args):
    database, samples, made = prepare(args)
    out = Path(tempfile.mkdtemp(prefix="crmagi-metrics-bench-")) / "load.json"
    server_config = "[metrics]\nlisten = 127.0.0.1:%d\n" % args.metrics_port
    cmd = [sys.executable, str(BENCH / "load.py"), "--database", database, "--samples", samples,
           "--rate", str(args.rate), "--duration", str(args.duration), "--workers", str(args.workers),
           "--procs", str(args.procs), "--port", str(args.port), "--server-config", server_config,
           "--json", str(out)]
    stop = threading.Event()
    scrapers = [Scraper(args.metrics_port, path, args.interval, args.timeout, stop)
                for path in ("/metrics", "/healthz")]
    try:
        load = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, text=True)
        for scraper in scrapers:
            scraper.start()
        load_output, _ = load.communicate()
        stop.set()
        for scraper in scrapers:
            scraper.join()
    finally:
        if made and not args.keep:
            drop_database(database)
    window = load_window(scrapers[0].samples)
    report = {"command": " ".join(sys.argv), "rate": args.rate, "duration": args.duration, "workers": args.workers,
              "interval": args.interval, "load_exit": load.returncode,
              "window_s": (window[1] - window[0]) if window else None,
              "endpoints": [summarise(s, window) for s in scrapers]}
    if out.exists():
        loaded = json.loads(out.read_text())
        report["load"] = {key: loaded.get(key) for key in ("calls_started", "calls_completed", "calls_per_min",
                                                           "error_count", "incoming", "server_cpu_s")}
    return report, load_output


def print_report(report, load_output):
    print(load_output.rstrip())
    print("\nmetrics endpoints while calls ran (%.1f s window, a GET of each every %.2f s, new connection each):"
          % (report["window_s"] or 0.0, report["interval"]))
    print("  %-9s %6s %8s %8s %8s %8s  %s" % ("path", "n", "p50 ms", "p99 ms", "max ms", ">10 ms", "statuses"))
    for e in report["endpoints"]:
        print("  %-9s %6d %8.2f %8.2f %8.2f %8d  %s" % (
            e["path"], e["n"], e["p50_ms"], e["p99_ms"], e["max_ms"], e["over_10ms"],
            ", ".join("%s: %d" % (k, v) for k, v in sorted(e["statuses"].items(), key=str))))
        if e["non_200_example"]:
            print("            e.g. %s" % e["non_200_example"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", help="an already generated database (with --samples); not dropped")
    p.add_argument("--samples", help="its generate.py sample file")
    p.add_argument("--contacts", type=int, default=20000, help="contacts and leads generated (accounts: 30 %%)")
    p.add_argument("--rate", type=float, default=200.0, help="calls/s (bench/load.py --rate)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of calls")
    p.add_argument("--workers", type=int, default=1, help="[agi] workers of crmagi serve")
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--port", type=int, default=14700, help="FastAGI port of the started crmagi serve")
    p.add_argument("--metrics-port", type=int, default=14790, help="its [metrics] listen port")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between GETs of each endpoint")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds one GET may take")
    p.add_argument("--keep", action="store_true", help="keep the generated database")
    p.add_argument("--json", help="write the report as JSON to this file")
    args = p.parse_args(argv)
    report, load_output = run(args)
    print_report(report, load_output)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["load_exit"] == 0 and report["window_s"] else 1


if __name__ == "__main__":
    sys.exit(main())
