"""Fill a SuiteCRM 7 database with N contacts / accounts / leads for the benchmarks (issue #3).

What it makes (reproducible: the same --seed gives the same rows, ids and sample file):

* ``users``: --users agents with an extension in ``phone_work`` (3-4 digits), a few inactive
  ones and a few whose phone_work is a full number (not an extension); they own the records.
* ``accounts`` (phone_office, phone_alternate, phone_fax), ``contacts`` and ``leads``
  (phone_work, phone_mobile, phone_home, phone_other, phone_fax, assistant_phone), 2 % of
  them soft-deleted, and ``accounts_contacts`` links for 80 % of the contacts.
* Numbers as people type them. ``--region DE``: ``030 1234567``, ``030/1234567``,
  ``(030) 123-45-67``, ``+49 30 1234567``, ``+49 (0)30 1234567``, ``0049 30 1234567``, without
  trunk prefix ``30 1234567``, local-only ``1234567``, mobiles ``0151 23456789``, extension
  suffixes `` x12`` / `` ext. 123``.  ``--region RU``: ``8 (499) 123-45-67``, ``+7 (916) 123-45-67``,
  ``8-499-123-45-67``, ``84991234567``, ``74991234567``, ``499 123 45 67``, local ``123-45-67``,
  `` доб. 12``.  Each region's CRM also holds numbers of the other country, of GB and FR,
  typed internationally.  Every number is valid for ``phonenumbers``.
* Duplicates across modules: a quarter of the linked contacts carry their account's switchboard
  number as phone_work (often with an extension suffix), 4 % of the leads carry a contact's
  number, a few accounts share a number, a few contacts share a home number.
* A sample file (JSON) of caller numbers as a trunk delivers them (``+4930…``, ``030…``,
  ``0049…``, ``4930…``; ``+7…``, ``8…``, ``7…``), each with the records that hold the number
  (``present``), and numbers that are in no record (``absent``).  lookup_compare.py and
  load.py call with these numbers.

Fast: rows are generated in this process while the previous chunk is loaded with
``LOAD DATA LOCAL INFILE`` (multi-row INSERTs of --chunk rows when the server refuses
local infile); the tables' secondary indexes are dropped for the load and rebuilt once at
the end (their exact SuiteCRM definitions).  Reports rows/s.

The parts: bench/generate_shapes.py (tables, columns, names, ids), bench/generate_phones.py
(numbering plans, number space, the typed and the delivered formats), bench/generate_rows.py
(the row builders), bench/generate_samples.py (the sample file's callers),
bench/generate_loader.py (the load into MariaDB), this file (the run and its options).

    python bench/generate.py                                  # new crmagi_bench_* database, 1M/300k/1M
    python bench/generate.py --database crm --contacts 20000 --accounts 6000 --leads 20000 --seed 7
    python bench/generate.py --region RU --samples /tmp/ru-samples.json
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import create_database  # noqa: E402
from generate_loader import Feed, connect, infile_works, prepare, rebuild  # noqa: E402
from generate_phones import MIX  # noqa: E402
from generate_rows import Generator  # noqa: E402
from generate_samples import samples  # noqa: E402
from generate_shapes import (ACCOUNT_COLS, CONTACT_COLS, DUPLICATE, LEAD_COLS, LINK_COLS,  # noqa: E402
                             ORIGINAL, USER_COLS)


def generate(args):
    """Create/fill the database; returns the report dict (also written into the sample file)."""
    database, created = args.database, False
    if not database:
        database, _ = create_database()
        created = True
    conn = connect(database)
    method = args.method
    if method == "auto":
        method = "infile" if infile_works(conn) else "insert"
    gen = Generator(args)
    counts = {"users": args.users, "accounts": args.accounts, "contacts": args.contacts, "leads": args.leads}
    print("generating into %s (%s): %s, region %s, seed %d, loading with %s" % (
        database, "created" if created else "existing",
        ", ".join("%d %s" % (v, k) for k, v in counts.items()), args.region, args.seed,
        "LOAD DATA LOCAL INFILE" if method == "infile" else "multi-row INSERT"), file=sys.stderr)
    started = time.monotonic()
    dropped = prepare(conn, args.keep_indexes)
    feed = Feed(conn, method, sum(counts.values()))
    try:
        link_rows = _fill(feed, gen, args)
        feed.finish()
    finally:
        feed.close()
        load_seconds = time.monotonic() - started
        index_seconds = rebuild(conn, dropped)
    seconds = time.monotonic() - started
    all_rows = sum(counts.values()) + link_rows
    report = {
        "database": database, "created": created, "region": args.region, "seed": args.seed,
        "method": method, "rows": dict(counts, accounts_contacts=link_rows), "total_rows": all_rows,
        "phone_numbers": sum(f.count(ORIGINAL) + f.count(DUPLICATE) for f in gen.flags.values()),
        "duplicate_numbers": sum(f.count(DUPLICATE) for f in gen.flags.values()),
        "load_seconds": round(load_seconds, 2), "index_seconds": round(index_seconds, 2),
        "seconds": round(seconds, 2), "rows_per_second": round(all_rows / max(seconds, 1e-9)),
        "load_warnings": feed.loader.warnings,
    }
    present, absent = _write_samples(args, gen, report)
    print("generated %d rows (%d phone numbers, %d duplicates) in %.1f s (load %.1f s + indexes %.1f s): "
          "%d rows/s; samples: %s (%d present, %d absent)" % (
              all_rows, report["phone_numbers"], report["duplicate_numbers"], seconds, load_seconds,
              index_seconds, report["rows_per_second"], report["samples"], len(present), len(absent)),
          file=sys.stderr)
    conn.close()
    return report


def _fill(feed, gen, args):
    """Every table generated chunk by chunk into the feed; the number of accounts_contacts links."""
    feed.put("users", USER_COLS, gen.user_rows())
    for start in range(0, args.accounts, args.chunk):
        feed.put("accounts", ACCOUNT_COLS, gen.account_rows(start, min(args.accounts, start + args.chunk)))
    links = []
    for start in range(0, args.contacts, args.chunk):
        rows, chunk_links = gen.contact_rows(start, min(args.contacts, start + args.chunk))
        feed.put("contacts", CONTACT_COLS, rows)
        links += chunk_links
    for start in range(0, args.leads, args.chunk):
        feed.put("leads", LEAD_COLS, gen.lead_rows(start, min(args.leads, start + args.chunk)))
    links.sort()                      # by id, like the other tables
    for start in range(0, len(links), args.chunk):
        feed.put("accounts_contacts", LINK_COLS, links[start:start + args.chunk])
    return len(links)


def _write_samples(args, gen, report):
    """The sample file written (the report as its ``meta``), its path added to the report;
    (present, absent)."""
    present, absent = samples(gen, args.samples_count, args.absent_count)
    samples_path = Path(args.samples or os.path.join(tempfile.gettempdir(), "crmagi-bench",
                                                       report["database"] + ".samples.json"))
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path.write_text(json.dumps({"meta": report, "users": gen.users, "present": present,
                                        "absent": absent}, ensure_ascii=False))
    report["samples"] = str(samples_path)
    return present, absent


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", help="fill this existing SuiteCRM database (default: create crmagi_bench_*)")
    p.add_argument("--contacts", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=300_000)
    p.add_argument("--leads", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=200, help="agents with extensions (owners of the records)")
    p.add_argument("--region", choices=sorted(MIX), default="DE", help="country of the CRM's numbers")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chunk", type=int, default=50_000, help="rows per LOAD DATA / INSERT batch")
    p.add_argument("--method", choices=("auto", "infile", "insert"), default="auto")
    p.add_argument("--keep-indexes", action="store_true",
                   help="load with the secondary indexes in place (slower; for a database in use)")
    p.add_argument("--samples", help="sample caller file to write (default: $TMPDIR/crmagi-bench/<db>.samples.json)")
    p.add_argument("--samples-count", type=int, default=20_000, help="known-present caller numbers")
    p.add_argument("--absent-count", type=int, default=5_000, help="known-absent caller numbers")
    p.add_argument("--json", help="write the report as JSON to this file")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    report = generate(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
