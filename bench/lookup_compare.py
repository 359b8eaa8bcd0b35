"""Caller lookup micro-benchmark: crmagi's Directory.lookup against the scan queries of the
integrations people use today, on the same database and the same caller numbers.

Methods (each a whole lookup as that tool does it, all modules it searches, timed end to end):

* ``crmagi``      crmagi's ``Directory.lookup`` as ``crmagi serve`` runs it (gevent-patched,
                  same engine settings).  It uses the phone index when ``crmagi index install``
                  has run on the database, else its scan; the report says which ("index" or "scan").
* ``yaai``        YAAI (blak3r/yaai, SugarModules/modules/Asterisk/include/callinize_db.php,
                  ``find_beans_db_query`` + ``sql_replace_phone_number``): per module, 9 nested
                  ``replace()`` of `` +./()[]-`` on every phone column, ``REGEXP '<last 8 digits>$' = 1``,
                  OR'ed, ``deleted='0'``; contacts LEFT JOIN accounts_contacts/accounts; every module
                  is searched (``find_beans`` with stop_on_find=false).
* ``oca``         OCA connector-telephony (base_phone/models/phone_common.py,
                  ``get_record_from_phone_number``): ``SELECT id FROM <table> WHERE replace(<col>, ' ', '')
                  ilike '%<last 8 digits>' OR ...`` (MariaDB: LIKE, case-insensitive collation), modules
                  in order, stops at the first with a row.
* ``superfecta``  FreePBX superfecta (sources/source-SugarCRM.module): the caller's last 10 digits
                  (Filter_Length default) as a digit-by-digit regex ``[^0-9]*4[^0-9]*9…([^0-9]+|$)``,
                  ``WHERE deleted = '0' AND a REGEXP ? OR b REGEXP ? … LIMIT 1`` (its operator
                  precedence kept) on accounts, users, contacts, leads with its own hard-coded columns,
                  stops at the first hit.

YAAI and OCA search the phone columns crmagi is configured with (their phone fields are
configurable); Superfecta's are hard-coded.  Caller data only ever reaches SQL as bound
parameters (PyMySQL escapes them), never formatted into the statement.

Every method looks up the same numbers, in the same order, drawn from the generator's sample
file (present numbers in varied trunk formats + ``--absent-share`` known-absent ones).  The
scans take seconds per lookup at 1M rows, so they run ``--scan-iterations`` lookups (default 5)
and crmagi ``--iterations`` (default 2000); the first lookup of each method is a warm-up, not
counted.  Reported per method: p50/p99/max ms, the ratio to crmagi, and how many present
numbers it found with the right record (``right``), with another record (``wrong``) or not at
all (``missed``), and absent numbers it "found" (``false+``).

    python bench/lookup_compare.py --database crmagi_bench_1a2b3c4d --samples /tmp/crmagi-bench/crmagi_bench_1a2b3c4d.samples.json
    python bench/lookup_compare.py --database DB --samples FILE --methods crmagi --iterations 5000
    python bench/lookup_compare.py --database DB --samples FILE --scan-iterations 10 --json out.json
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import percentile, write_config  # noqa: E402

METHODS = ("crmagi", "yaai", "oca", "superfecta")
YAAI_DIGITS = 8        # asterisk_digits_to_match in the comparison
OCA_DIGITS = 8         # number_of_digits_to_match_from_end (its default)
SUPERFECTA_DIGITS = 10  # Filter_Length default
YAAI_STRIP = (" ", "+", ".", "/", "(", ")", "[", "]", "-")
SUPERFECTA_COLUMNS = (
    ("Accounts", "accounts", "name", ("phone_office", "phone_alternate", "phone_fax")),
    ("Users", "users", "first_name,last_name", ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax")),
    ("Contacts", "contacts", "first_name,last_name", ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax")),
    ("Leads", "leads", "first_name,last_name", ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax")),
)


def digits(text):
    return re.sub(r"\D", "", text or "")


class ScanQueries:
    """The other integrations' lookups as SQL on one PyMySQL connection (no ORM in between)."""

    def __init__(self, database, modules):
        import pymysql

        self.conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                    database=database, charset="utf8mb4", autocommit=True)
        self.modules = modules     # [(module name, table, phone columns)] in crmagi's order
        self._yaai = {m: self._yaai_sql(m, t, cols) for m, t, cols in modules}
        self._oca = {m: "SELECT id FROM %s WHERE %s" % (t, " or ".join("replace(%s, ' ', '') like %%s" % c for c in cols))
                     for m, t, cols in modules}
        self._superfecta = [(m, "SELECT id, %s FROM %s WHERE deleted = '0' AND %s LIMIT 1" % (
            names, table, " OR ".join("%s.%s REGEXP %%s" % (table, c) for c in cols)), len(cols))
            for m, table, names, cols in SUPERFECTA_COLUMNS]

    @staticmethod
    def _yaai_sql(module, table, columns):
        def stripped(column):
            expr = "c." + column
            for char in YAAI_STRIP:
                expr = "replace(%s, '%s', '')" % (expr, char)
            return expr + " REGEXP %s = 1"
        if table == "accounts":
            select = "SELECT c.id AS bean_id, c.name AS bean_last_name, c.description AS bean_description FROM accounts c"
        else:
            select = ("SELECT c.id AS bean_id, c.first_name AS bean_first_name, c.last_name AS bean_last_name, "
                      "c.description AS bean_description")
            if table == "contacts":
                select += (", a.name AS parent_name, a.id AS parent_id FROM contacts c"
                           " LEFT JOIN accounts_contacts ac ON (c.id=ac.contact_id) AND (ac.deleted='0' OR ac.deleted IS NULL)"
                           " LEFT JOIN accounts a ON (ac.account_id=a.id) AND (a.deleted='0' OR a.deleted IS NULL)")
            else:
                select += " FROM %s c" % table
        return (select + " WHERE (" + " OR ".join(stripped(c) for c in columns) + ") AND c.deleted='0'", len(columns))

    def yaai(self, caller):
        """All modules; returns [(module, id)] of every bean found."""
        number = digits(caller.lstrip("0"))[-YAAI_DIGITS:]
        if len(number) <= 5:
            return []
        found = []
        with self.conn.cursor() as cur:
            for module, (stmt, n) in self._yaai.items():
                cur.execute(stmt, (number + "$",) * n)
                found += [(module, row[0]) for row in cur.fetchall()]
        return found

    def oca(self, caller):
        number = digits(caller)
        pattern = "%" + number[-OCA_DIGITS:]
        with self.conn.cursor() as cur:
            for module, _, columns in self.modules:
                cur.execute(self._oca[module], (pattern,) * len(columns))
                rows = cur.fetchall()
                if rows:
                    return [(module, rows[0][0])]
        return []

    def superfecta(self, caller):
        number = digits(caller)[-SUPERFECTA_DIGITS:]
        if not number:
            return []
        regex = "[^0-9]*" + "".join(d + "[^0-9]*" for d in number[:-1]) + number[-1] + "([^0-9]+|$)"
        with self.conn.cursor() as cur:
            for module, stmt, n in self._superfecta:
                cur.execute(stmt, (regex,) * n)
                row = cur.fetchone()
                if row:
                    return [(module, row[0])]
        return []

    def close(self):
        self.conn.close()


def index_state(engine, rules):
    """'index' when crmagi's phone index is installed and ready, else 'scan' (and why)."""
    try:
        from crmsync.phoneindex import PhoneIndex
    except ImportError:
        return "scan", "index not available (no crmsync.phoneindex): scan path measured"
    try:
        ready = PhoneIndex(engine, rules).is_ready()
    except Exception as exc:      # not installed on this database yet
        return "scan", "index not ready (%s): scan path measured" % exc
    if ready:
        return "index", "phone index installed and ready"
    return "scan", "index not installed on this database (crmagi index install/rebuild): scan path measured"


def pick_numbers(samples, count, absent_share, seed):
    """``count`` (caller, expectation) pairs: present and absent numbers mixed, reproducible."""
    rng = random.Random(seed)
    present, absent = list(samples["present"]), list(samples["absent"])
    rng.shuffle(present)
    rng.shuffle(absent)
    picked, p, a = [], 0, 0
    for i in range(count):
        if absent and (not present or rng.random() < absent_share):
            picked.append((absent[a % len(absent)]["caller"], None))
            a += 1
        else:
            picked.append((present[p % len(present)]["caller"], present[p % len(present)]))
            p += 1
    return picked


def judge(tally, expectation, found):
    """found: [(module, id)] the method returned (first = its answer)."""
    if expectation is None:
        tally["false+"] += bool(found)
        return
    ids = {g[1] for g in expectation["group"]}
    if not found:
        tally["missed"] += 1
    elif found[0][1] in ids or (len(found) > 1 and any(f[1] in ids for f in found)):
        tally["right"] += 1
    else:
        tally["wrong"] += 1


def measure(name, func, numbers, warmup=True):
    tally = {"right": 0, "wrong": 0, "missed": 0, "false+": 0, "errors": 0}
    if warmup and numbers:
        try:
            func(numbers[0][0])
        except Exception:
            pass
    times, example = [], None
    for caller, expectation in numbers:
        started = time.perf_counter()
        try:
            found = func(caller)
        except Exception as exc:        # e.g. crmagi's query_timeout: counted, and its time kept
            tally["errors"] += 1
            example = example or "%s: %s" % (type(exc).__name__, exc)
            found = None
        times.append((time.perf_counter() - started) * 1000.0)
        if found is not None:
            judge(tally, expectation, found)
    return {"method": name, "n": len(times), "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
            "max_ms": max(times) if times else float("nan"), "mean_ms": sum(times) / max(1, len(times)),
            "error_example": example, **tally}


def run(args):
    from agi import config as config_mod
    from agi.app import build_engine, lookup_rules
    from crmsync import phone
    from crmsync.directory import Directory

    samples = json.loads(Path(args.samples).read_text(encoding="utf-8"))
    region = args.region or samples.get("meta", {}).get("region", "DE")
    url = "mysql+pymysql://root@127.0.0.1:3306/" + args.database
    # query_timeout: crmagi serve gives a CRM read 5 s; its scan needs more at 1M rows, and the
    # point here is to measure it, so the limit is raised (--query-timeout).
    ini = write_config(url, Path(tempfile.mkdtemp(prefix="crmagi-lookup-")) / "crmagi.ini", region=region,
                       crm="query_timeout = %g\n" % args.query_timeout)
    cfg = config_mod.load(str(ini))
    engine = build_engine(cfg, read_only=True)
    rules = lookup_rules(cfg)
    directory = Directory(engine, rules)
    path, why = index_state(engine, rules)
    modules = [(m.name, m.table, m.phone_fields) for m in cfg.modules]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit("unknown method(s) %s; known: %s" % (", ".join(sorted(unknown)), ", ".join(METHODS)))
    numbers = pick_numbers(samples, max(args.iterations, args.scan_iterations) + 1, args.absent_share, args.seed)
    print("lookup_compare on %s: crmagi path %s (%s)" % (args.database, path, why), file=sys.stderr)
    results = []

    def crmagi(caller):
        result = directory.lookup(caller)
        return [(result.caller.module, result.caller.record_id)] if result.caller else []

    scans = ScanQueries(args.database, modules)
    try:
        for method in methods:
            if method == "crmagi":
                count = args.iterations if path == "index" else min(args.iterations, args.crmagi_scan_iterations)
                label = "crmagi (%s)" % path
                func = crmagi
            else:
                count, label, func = args.scan_iterations, method, getattr(scans, method)
            for n in range(args.passes if method == "crmagi" else 1):
                if n:
                    label = "crmagi pass %d" % (n + 1)
                if args.clear_parse_cache:
                    phone.clear_cache()
                print("  %-16s %d lookups ..." % (label, count), file=sys.stderr, flush=True)
                row = measure(label, func, numbers[1:count + 1] if count else [], warmup=not n)
                row.update(path=path if method == "crmagi" else "scan")
                results.append(row)
                print("  %-16s p50 %.3f ms  p99 %.3f ms  max %.3f ms" % (
                    label, row["p50_ms"], row["p99_ms"], row["max_ms"]), file=sys.stderr, flush=True)
    finally:
        scans.close()
        engine.dispose()
    base = next((r for r in results if r["method"].startswith("crmagi")), None)
    for row in results:
        row["ratio_p50"] = row["p50_ms"] / base["p50_ms"] if base and base["p50_ms"] > 0 else None
        row["ratio_p99"] = row["p99_ms"] / base["p99_ms"] if base and base["p99_ms"] > 0 else None
    meta = samples.get("meta", {})
    return {"database": args.database, "rows": meta.get("rows"), "region": region, "crmagi_path": path,
            "crmagi_path_note": why, "absent_share": args.absent_share, "results": results}


def print_table(report, stream=sys.stdout):
    rows = report.get("rows") or {}
    print("lookup on %s (%s): crmagi path = %s" % (
        report["database"], ", ".join("%s %s" % (v, k) for k, v in rows.items()), report["crmagi_path"]), file=stream)
    print("%-16s %6s %10s %10s %10s %10s %6s %6s %6s %6s %6s" % (
        "method", "n", "p50 ms", "p99 ms", "max ms", "x crmagi", "right", "wrong", "missed", "false+", "errors"),
        file=stream)
    for r in report["results"]:
        ratio = "%.0fx" % r["ratio_p50"] if r.get("ratio_p50") and r["ratio_p50"] >= 10 else (
            "%.2fx" % r["ratio_p50"] if r.get("ratio_p50") else "-")
        print("%-16s %6d %10.3f %10.3f %10.3f %10s %6d %6d %6d %6d %6d" % (
            r["method"], r["n"], r["p50_ms"], r["p99_ms"], r["max_ms"], ratio, r["right"], r["wrong"],
            r["missed"], r["false+"], r["errors"]), file=stream)
        if r.get("error_example"):
            print("  %s errors, e.g. %s" % (r["method"], r["error_example"]), file=stream)


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", required=True)
    p.add_argument("--samples", required=True, help="sample file written by generate.py")
    p.add_argument("--region", help="[lookup] default_region (default: the sample file's)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of %s" % ", ".join(METHODS))
    p.add_argument("--iterations", type=int, default=2000, help="crmagi lookups (index path)")
    p.add_argument("--scan-iterations", type=int, default=5, help="lookups per scan method")
    p.add_argument("--crmagi-scan-iterations", type=int, default=10,
                   help="crmagi lookups when it has no index (it scans then)")
    p.add_argument("--absent-share", type=float, default=0.2, help="share of known-absent numbers")
    p.add_argument("--query-timeout", type=float, default=600.0,
                   help="[crm] query_timeout for crmagi here (crmagi serve: 5 s; its scan needs more at 1M rows)")
    p.add_argument("--passes", type=int, default=1,
                   help="crmagi: look the same numbers up this many times in one process; from the second "
                        "pass on their parses are in crmagi's cache (8,192 entries: keep --iterations at "
                        "3,000 or less for that)")
    p.add_argument("--clear-parse-cache", action="store_true",
                   help="empty crmagi's parse cache before each pass: a later pass then differs from the "
                        "first only by a warm process and database")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the report as JSON to this file")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print_table(report)


if __name__ == "__main__":
    main()
