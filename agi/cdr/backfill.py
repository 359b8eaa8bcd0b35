"""`crmagi backfill` and the backfill on start: the calls Asterisk's CDR holds and crmagi never saw.

Reads [cdr] csv (or the table of [cdr] url), groups the rows into calls
(agi/cdr/calls.py), leaves out every call whose linkedid or uniqueid crmagi holds
(a logged call, or one still in its spool), and writes the rest as finished Calls
through the App's writer: looked up and linked when written, spooled while the CRM
is down.  A call's id derives from its linkedid (its uniqueid in a Master.csv without
newcdrcolumns), so running it twice writes nothing twice.
"""
import glob
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import List
from zoneinfo import ZoneInfo

from agi.errors import ConfigError

from . import calls, csvrows

log = logging.getLogger("crmagi.backfill")
# The backfill on start reaches this far before the last logged call's start: the CDR's times come
# from the PBX's clock, crmagi's from its own, and the call began (CDR) before its AGI ran (crmagi).
# Calls crmagi holds in that overlap are left out like any other it saw.
ON_START_OVERLAP = timedelta(minutes=5)


@dataclass
class Report:
    calls: int = 0                 # calls in the window
    seen: int = 0                  # crmagi had them already
    internal: int = 0              # outbound to an extension: not logged ([agi] log_internal)
    written: int = 0
    spooled: int = 0               # the CRM did not take them yet; the spool will
    problems: List[str] = field(default_factory=list)

    def summary(self):
        return ("%d call(s) in the CDR: %d written, %d spooled until the CRM takes them, %d crmagi had "
                "already, %d internal; %d unreadable CDR line(s)"
                % (self.calls, self.written, self.spooled, self.seen, self.internal, len(self.problems)))


def contexts_of(config, tenant=""):
    """The contexts whose calls are this crmagi's (with a tenant: that tenant's)."""
    return calls.Contexts(inbound=frozenset(config.ami.inbound_contexts),
                          outbound=frozenset(config.ami.outbound_contexts), tenant=tenant,
                          tenant_contexts=frozenset(config.tenant.contexts), tenant_dids=frozenset(config.tenant.dids))


def read_rows(config, since, until, engine_for=None):
    """(rows, problems) of [cdr] csv or [cdr] url around [since, until)."""
    cdr = config.cdr
    zone = ZoneInfo(cdr.timezone)
    if cdr.csv:
        try:
            with open(cdr.csv, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError("config [cdr] csv: cannot read %s (%s)" % (cdr.csv, exc.strerror)) from None
        return csvrows.parse(data, zone)
    if not cdr.url:
        raise ConfigError("config [cdr] csv: set csv (Asterisk's Master.csv) or url (its CDR database)")
    from crmsync import cdrtable

    local = [moment.astimezone(zone).replace(tzinfo=None) for moment in (since, until)]
    rows, problems = [], []
    for named in cdrtable.read(engine_for(cdr.url), cdr.table, *local):
        try:
            rows.append(csvrows.row_from(named, zone))
        except csvrows.BadRow as exc:
            problems.append("%s row %s: %s" % (cdr.table, named.get("uniqueid", "?"), exc))
    return rows, problems


def run(app, since, until=None, tenant="", engine_for=None):
    """Backfill [since, until) (default: until now) with the App's flow, store, spool and writer."""
    until = until or datetime.now(timezone.utc)
    rows, problems = read_rows(app.config, since, until, engine_for)
    found = [call for call in calls.group(rows, contexts_of(app.config, tenant))
             if since <= call.first.start and call.ended_at <= until]
    report = Report(calls=len(found), problems=problems)
    seen = app.store.seen(set().union(*(call.ids for call in found))) if found else set()
    seen |= app.spool.asterisk_ids()
    for call in found:
        if call.ids & seen:
            report.seen += 1
        elif not calls.is_logged(call, app.flow):
            report.internal += 1
        else:
            record = calls.record_of(call, app.flow, recording_of(call, app.config.recordings))
            written = app.writer.submit("finish", record)
            report.written += written
            report.spooled += not written
            log.info("backfilled call %s (%s %s) from the CDR", record.linkedid, record.direction, record.number)
    for problem in problems:
        log.warning("CDR: %s", problem)
    return report


def recording_of(call, recordings):
    """The recording MixMonitor made of the call, found by its uniqueid in the file name (the
    include's ``in-DATE-TIME-UNIQUEID.wav``), as Asterisk names it; "" when crmagi cannot list
    the folder ([recordings] local_dir unset) or there is none."""
    if not recordings.local_dir:
        return ""
    for uniqueid in dict.fromkeys(row.uniqueid for row in call.rows if row.uniqueid):
        pattern = os.path.join(glob.escape(recordings.local_dir), "*-%s.*" % glob.escape(uniqueid))
        for path in sorted(glob.glob(pattern)):
            return os.path.join(recordings.monitor_dir, os.path.relpath(path, recordings.local_dir))
    return ""


def on_start(app, tenant=""):
    """The backfill an App runs when it starts: since the last call it logged.  Never raises."""
    try:
        last = app.store.last_started()
        if last is None:
            log.info("CDR backfill on start: no call logged yet; run `crmagi backfill --since TIME` once")
            return None
        since = last - ON_START_OVERLAP
        report = run(app, since, tenant=tenant, engine_for=engine)
        log.info("CDR backfill since %s: %s", since.isoformat(), report.summary())
        return report
    except Exception as exc:    # noqa: BLE001 - the service runs on; the next start tries again
        log.warning("CDR backfill on start failed: %s", exc)
        return None


def engine(url):
    from crmsync.db import make_engine

    return make_engine(url, pool_size=1, connect_timeout=5.0, query_timeout=60.0)
