"""/healthz: can this crmagi do its job?  Answered from state kept up to date in the background.

Unhealthy when the CRM database does not answer ``SELECT 1``, when ``[ami] host``
is set but the AMI link is down, or when the spool is past ``[agi] spool_max_mb``.
A greenlet probes the database every ``[metrics] probe_interval`` seconds, so the
endpoint never waits on the network.  The App gives it an engine of its own that
opens a new connection each time: a pool drained by a burst of calls is not an
outage, while a refused login or a dropped database is one even when connections
opened before still answer.
"""
import logging
import time

import gevent

from agi.ops.metrics import Periodic

log = logging.getLogger("crmagi.health")
MAX_ERROR = 200           # characters of the database's error shown in the reason
PROBE_TIMEOUT = 3.0       # seconds a SELECT 1 may take: a busy box can stall a greenlet ~0.5 s
FAILURES_TO_DOWN = 2      # probes failed in a row before the CRM counts as unreachable


def verdict(crm_up, ami_connected, spool_full, crm_error=""):
    """``(healthy, reasons)``.  ``crm_up`` None: not probed yet (not counted as down);
    ``ami_connected`` None: no AMI configured."""
    reasons = []
    if crm_up is False:
        reasons.append("crm unreachable" + (": " + crm_error if crm_error else ""))
    if ami_connected is False:
        reasons.append("ami down")
    if spool_full:
        reasons.append("spool full")
    return not reasons, reasons


def body(healthy, reasons, crm_up, ami_connected, spool_full, **extra):
    """The JSON document /healthz answers."""
    return dict({"status": "ok" if healthy else "unhealthy", "reasons": reasons,
                 "crm": {None: "unknown", True: "up", False: "down"}[crm_up],
                 "ami": {None: "off", True: "up", False: "down"}[ami_connected],
                 "spool_full": bool(spool_full)}, **extra)


class Health:
    """``ping()`` raises when the CRM is unreachable; ``spool.stats().full``; ``ami.connected``."""

    def __init__(self, ping, spool, ami=None, interval=2.0, timeout=PROBE_TIMEOUT,
                 failures_to_down=FAILURES_TO_DOWN, clock=time.monotonic):
        self.ping, self.spool, self.ami = ping, spool, ami
        self.interval, self.timeout, self.clock = interval, timeout, clock
        self.failures_to_down = failures_to_down
        self.crm_up = None
        self.crm_error = ""
        self.failures = 0         # probes failed in a row
        self.spool_full = False
        self.checked_at = None
        self._runner = Periodic(self.check, interval)

    def check(self):
        """One round: probe the CRM (bounded by ``timeout``), read the spool's bound."""
        try:
            with gevent.Timeout(self.timeout, TimeoutError("no answer within %.1fs" % self.timeout)):
                self.ping()
            error = ""
        except Exception as exc:      # noqa: BLE001 - whatever it is, the CRM did not answer
            error = (str(exc).splitlines() or [type(exc).__name__])[0][:MAX_ERROR]
        self.failures = self.failures + 1 if error else 0
        if error and self.failures >= self.failures_to_down:
            if self.crm_up is not False:
                log.warning("health: CRM database unreachable: %s", error)
            self.crm_up, self.crm_error = False, error
        elif not error:
            if self.crm_up is False:
                log.info("health: CRM database answers again")
            self.crm_up, self.crm_error = True, ""
        try:
            self.spool_full = bool(self.spool.stats().full)
        except Exception as exc:      # noqa: BLE001 - the disk; reported, retried next round
            log.warning("health: cannot read the spool: %s", exc)
        self.checked_at = self.clock()

    def start(self):
        self._runner.start()
        return self

    def stop(self):
        self._runner.stop()

    def report(self):
        """``(healthy, body)`` from what the last round saw and the AMI link now."""
        ami = None if self.ami is None else self.ami.connected.is_set()
        healthy, reasons = verdict(self.crm_up, ami, self.spool_full, self.crm_error)
        return healthy, body(healthy, reasons, self.crm_up, ami, self.spool_full)


def merged_report(readings, workers_alive, workers):
    """``(healthy, body)`` of several workers from their merged readings (agi/ops/workers.py)."""
    def flag(name):
        return None if name not in readings else bool(readings[name])

    crm_up, ami = flag("crmagi_crm_up"), flag("crmagi_ami_connected")
    spool_full = bool(readings.get("crmagi_spool_full"))
    healthy, reasons = verdict(crm_up, ami, spool_full)
    if not workers_alive:
        healthy = False
        reasons.append("no worker running")
    return healthy, body(healthy, reasons, crm_up, ami, spool_full, workers="%d/%d" % (workers_alive, workers))
