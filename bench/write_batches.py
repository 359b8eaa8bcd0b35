"""CPU of call starts written N per transaction: what group commit saves (issue #12).

Builds crmagi's App on a ``generate.py`` database (index rebuilt), looks up N sample callers and
links their CallRecords as a call would, then writes the starts back to back, ``--per``
starts per transaction (``CallStore.insert_statements`` through ``crmsync.sqlbatch``, as
``crmsync/groupcommit.py`` sends a shared transaction).  Prints MariaDB's and this process's CPU
per start (statement building included).

    python bench/write_batches.py --database DB --samples FILE --starts 3000 --per 1
    python bench/write_batches.py --database DB --samples FILE --starts 3000 --per 10
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from gevent import monkey

monkey.patch_all()

sys.path.insert(0, str(Path(__file__).resolve().parent))
from call_steps import _cpu, linked_record  # noqa: E402
from common import cpu_seconds, pid_of, write_config  # noqa: E402
from agi.app import App  # noqa: E402
from agi.config import load  # noqa: E402
from crmsync import sqlbatch  # noqa: E402
from crmsync.calls import _now  # noqa: E402


def records(app, samples, count):
    numbers = [s["caller"] for s in json.load(open(samples))["present"]][:count]
    epoch = int(time.time())
    return [linked_record(app, number, app.flow.directory.lookup(number), epoch, i)
            for i, number in enumerate(numbers)]


def run(database, samples, starts, per):
    ini = write_config("mysql+pymysql://root@127.0.0.1:3306/%s" % database,
                       Path(tempfile.mkdtemp(prefix="crmagi-batches-")) / "crmagi.ini", port=0)
    app = App(load(str(ini)), popup_server=False)
    try:
        store = app.store
        store.ensure_tables()
        recs = records(app, samples, starts)
        mariadb = pid_of("mariadbd", "mysqld")[0]
        db0, own0 = cpu_seconds(mariadb), _cpu()
        for at in range(0, len(recs), per):
            now = _now()
            statements = [s for rec in recs[at:at + per] for s in store.insert_statements(rec, now)]
            with sqlbatch.transaction(store.engine) as tx:
                tx.commit(statements)
        n = max(1, len(recs))
        return {"starts": len(recs), "per": per, "mariadb_us": (cpu_seconds(mariadb) - db0) / n * 1e6,
                "crmagi_us": (_cpu() - own0) / n * 1e6}
    finally:
        app.stop(timeout=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--starts", type=int, default=3000)
    p.add_argument("--per", type=int, default=10, help="starts per transaction")
    args = p.parse_args(argv)
    r = run(args.database, args.samples, args.starts, args.per)
    print("%d starts, %d per transaction: MariaDB %.0f us, crmagi %.0f us of CPU per start"
          % (r["starts"], r["per"], r["mariadb_us"], r["crmagi_us"]))


if __name__ == "__main__":
    main()
