"""Prometheus metrics: the registry, the metric objects, and the readings taken at scrape time.

Events (a FastAGI request answered, a lookup, a Call write, a database error) are
counted where they happen, through small hooks the composition root (agi/app.py)
hands to the I/O layers.  Levels (spool depth, AMI link, browser sockets) and
counts that other objects keep anyway (AMI logins, popups sent) are *readings*:
functions read when Prometheus scrapes, never on the hot path.

With ``[agi] workers`` > 1 every worker is its own process, and one view of them
all comes from prometheus_client's multiprocess mode: each worker's metrics live
in mmap'd files under PROMETHEUS_MULTIPROC_DIR (set up by agi/ops/workers.py), which
the parent merges when scraped.  A scrape in the parent cannot call into a
worker, so there each worker's ``Sampler`` copies its readings into
multiprocess gauges once a second (counters by their increase).
"""
import logging
import os
import time

import gevent
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("crmagi.metrics")
SAMPLE_EVERY = 1.0        # seconds between a worker's readings in multiprocess mode
# Asterisk waits for the AGI answer: [agi] timeout is 0.5 s by default.
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 2.5, 5.0)
LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Readings: name -> (type, help, how workers' values merge).  The type gives the suffix:
# counters are exposed as <name>_total.
READINGS = {
    "crmagi_spool_pending": ("gauge", "call writes waiting in the spool for the CRM", "livesum"),
    "crmagi_spool_dead": ("gauge", "spooled writes given up on (dead letters; `crmagi spool list`)", "livesum"),
    "crmagi_spool_oldest_age_seconds": ("gauge", "how long the oldest spooled write has waited (0: none)",
                                        "livemax"),
    "crmagi_spool_size_bytes": ("gauge", "size of the spool file(s)", "livesum"),
    "crmagi_spool_full": ("gauge", "1 when a spool is past [agi] spool_max_mb", "livemax"),
    "crmagi_write_transactions": ("counter", "database transactions of Call writes (starts, finishes, "
                                  "live updates) tried", None),
    "crmagi_write_ops": ("counter", "Call writes in those transactions: more than one per transaction when "
                         "writes queued behind [crm] write_lanes", None),
    "crmagi_crm_up": ("gauge", "1 when the last background SELECT 1 on the CRM database answered", "livemin"),
    "crmagi_ami_connected": ("gauge", "1 while logged in to the Asterisk Manager (absent without [ami] host)",
                             "livemin"),
    "crmagi_ami_reconnects": ("counter", "AMI logins after the first (each one follows a lost link)", None),
    "crmagi_ami_effects_backlog": ("gauge", "AMI domain events waiting for their effects (popups, CRM updates); "
                                   "past 2,000 the updates go through the spool", "livesum"),
    "crmagi_ami_spooled": ("counter", "calls' live updates sent to the spool because the AMI effects "
                                   "were behind", None),
    "crmagi_ami_dropped": ("counter", "AMI domain events dropped: the effects queue was full "
                                  "(200,000) and the spool did not keep up either", None),
    "crmagi_websocket_sockets": ("gauge", "browser tabs connected to the popup websocket", "livesum"),
    "crmagi_websocket_users": ("gauge", "CRM users with at least one connected tab", "livesum"),
    "crmagi_popups_sent": ("counter", "popups shown in a browser tab", None),
}


class Metrics:
    """The metric objects of one process; ``multiprocess`` when a worker of several."""

    def __init__(self, multiprocess=False, clock=time.monotonic):
        if multiprocess and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise RuntimeError("multiprocess metrics need PROMETHEUS_MULTIPROC_DIR (set by agi/ops/workers.py)")
        self.multiprocess = multiprocess
        self.clock = clock
        self.registry = CollectorRegistry()
        # A worker's metrics are not served by the worker: they go to the mmap'd files only.
        registry = None if multiprocess else self.registry
        self.calls = Counter("crmagi_calls", "FastAGI requests handled, by route and the CRM_STATUS they "
                             "set (none: hangup, or failed before)", ["route", "crm_status"], registry=registry)
        self.answer_seconds = Histogram("crmagi_agi_answer_seconds", "FastAGI answer time, from accept to "
                                        "socket close: what Asterisk waits", ["route"], buckets=ANSWER_BUCKETS,
                                        registry=registry)
        self.lookup_seconds = Histogram("crmagi_lookup_seconds", "caller lookups in the CRM, late or failed "
                                        "ones included", buckets=LOOKUP_BUCKETS, registry=registry)
        self.call_writes = Counter("crmagi_call_writes", "Call writes to the CRM: via direct (during the call; "
                                   "a failed one is spooled) or spool (replay), result ok or failed",
                                   ["via", "result"], registry=registry)
        self.db_errors = Counter("crmagi_db_errors", "errors raised by the CRM database driver (failed "
                                 "connects included), by exception class", ["error"], registry=registry)
        self.readers = []
        if not multiprocess:
            self.registry.register(_ReadingsCollector(self))

    # -- hooks for the I/O layers ------------------------------------------------
    def agi_answered(self, route, crm_status, seconds):
        """agi/fastagi/server.py, once per FastAGI request of a known route."""
        self.calls.labels(route, crm_status or "none").inc()
        if seconds is not None:
            self.answer_seconds.labels(route).observe(seconds)

    def call_write(self, via, ok):
        """crmsync CallWriter ``on_write``."""
        self.call_writes.labels(via, "ok" if ok else "failed").inc()

    def db_error(self, error):
        """crmsync.db.watch_errors."""
        self.db_errors.labels(error).inc()

    def timed(self, directory):
        """The directory with its lookups timed."""
        return TimedDirectory(directory, self.lookup_seconds, self.clock)

    # -- readings ------------------------------------------------------------------
    def read(self, reader):
        """Add a reading: a function returning {name in READINGS: number}, cheap, no network."""
        self.readers.append(reader)

    def readings(self):
        values = {}
        for reader in self.readers:
            try:
                values.update(reader())
            except Exception as exc:      # noqa: BLE001 - one bad reading must not cost the scrape
                log.warning("metrics reading %s failed: %s", getattr(reader, "__name__", reader), exc)
        return values

    def sampler(self, interval=SAMPLE_EVERY):
        return Sampler(self, interval)


class _ReadingsCollector:
    """Single-process mode: the readings, read when scraped."""

    def __init__(self, metrics):
        self.metrics = metrics

    def describe(self):
        return []      # registering must not read anything yet

    def collect(self):
        for name, value in sorted(self.metrics.readings().items()):
            kind, help_text, _mode = READINGS[name]
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, help_text, value=value)


class Periodic:
    """``func()`` now, then every ``interval`` seconds, in a greenlet, until stopped."""

    def __init__(self, func, interval):
        self.func, self.interval = func, interval
        self._greenlet = None

    def start(self):
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self):
        while True:
            self.func()
            gevent.sleep(self.interval)


class Sampler(Periodic):
    """Multiprocess mode: copies the readings into the mmap'd metrics every ``interval`` s."""

    def __init__(self, metrics, interval):
        super().__init__(self.sample, interval)
        self.metrics = metrics
        self.gauges, self.counters, self.last = {}, {}, {}

    def sample(self):
        for name, value in self.metrics.readings().items():
            kind, help_text, mode = READINGS[name]
            if kind == "gauge":
                if name not in self.gauges:
                    self.gauges[name] = Gauge(name, help_text, multiprocess_mode=mode, registry=None)
                self.gauges[name].set(value)
                continue
            if name not in self.counters:
                self.counters[name] = Counter(name, help_text, registry=None)
            increase = value - self.last.get(name, 0)
            if increase > 0:
                self.counters[name].inc(increase)
            self.last[name] = max(value, self.last.get(name, 0))

    def stop(self):
        super().stop()
        self.sample()        # what happened since the last round


class TimedDirectory:
    """Wraps a crmsync Directory: ``lookup`` is timed, everything else passes through."""

    def __init__(self, directory, histogram, clock):
        self._directory, self._histogram, self._clock = directory, histogram, clock

    def lookup(self, number):
        started = self._clock()
        try:
            return self._directory.lookup(number)
        finally:
            self._histogram.observe(self._clock() - started)

    def __getattr__(self, name):
        return getattr(self._directory, name)


# -- readings of the objects the App holds (duck-typed: no import of crmsync or webpush) --
def spool_reading(spool):
    def spool_stats():
        stats = spool.stats()
        return {"crmagi_spool_pending": stats.pending, "crmagi_spool_dead": stats.dead,
                "crmagi_spool_oldest_age_seconds": stats.oldest_age or 0.0,
                "crmagi_spool_size_bytes": stats.size_bytes, "crmagi_spool_full": int(bool(stats.full))}
    return spool_stats


def writes_reading(group):
    def write_transactions():
        return {"crmagi_write_transactions": group.transactions, "crmagi_write_ops": group.ops}
    return write_transactions


def ami_reading(client):
    def ami_link():
        return {"crmagi_ami_connected": int(client.connected.is_set()),
                "crmagi_ami_reconnects": max(0, client.stats["connects"] - 1)}
    return ami_link


def live_reading(live):
    def ami_effects():
        return {"crmagi_ami_effects_backlog": live.pending(), "crmagi_ami_spooled": live.stats["shelved"],
                "crmagi_ami_dropped": live.stats["dropped"]}
    return ami_effects


def popups_reading(hub, book):
    def browsers():
        return {"crmagi_websocket_sockets": hub.count(), "crmagi_websocket_users": hub.users(),
                "crmagi_popups_sent": book.stats["delivered"]}
    return browsers


def crm_reading(health):
    def crm_probe():
        return {} if health.crm_up is None else {"crmagi_crm_up": int(health.crm_up)}
    return crm_probe
