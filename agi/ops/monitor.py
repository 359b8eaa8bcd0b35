"""The monitoring endpoint: a small gevent WSGI server on ``[metrics] listen``.

``/metrics`` answers the Prometheus text format, ``/healthz`` 200 or 503 with a
small JSON body.  Both answer from memory (the registry, the last health round,
the mmap'd files of the workers): nothing in a request waits on the CRM or on
a worker, so they stay fast while calls are handled.
"""
import glob
import json
import logging
import os

from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from agi.ops.health import merged_report

log = logging.getLogger("crmagi.metrics")
MAX_CLIENTS = 64          # scrapers and probes at once; a flood waits in the accept queue
HEALTH_READINGS = ("crmagi_crm_up", "crmagi_ami_connected", "crmagi_spool_full")


class LocalView:
    """One process (``[agi] workers = 1``): the App's own registry and Health."""

    def __init__(self, metrics, health):
        self.metrics, self._health = metrics, health

    def metrics_text(self):
        return generate_latest(self.metrics.registry)

    def health(self):
        return self._health.report()


class MergedView:
    """The parent of several workers: their metrics merged from PROMETHEUS_MULTIPROC_DIR, and
    health from their merged readings (``alive()``: how many workers run now)."""

    def __init__(self, path, alive, workers):
        self.path, self.alive, self.workers = path, alive, workers
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=path)

    def metrics_text(self):
        return generate_latest(self.registry)

    def health(self):
        # Only the live gauges' files: a third of the work of a whole /metrics.
        files = glob.glob(os.path.join(self.path, "gauge_live*.db"))
        readings = {}
        for family in multiprocess.MultiProcessCollector.merge(files, accumulate=False):
            if family.name in HEALTH_READINGS and family.samples:
                readings[family.name] = family.samples[0].value
        return merged_report(readings, self.alive(), self.workers)


class MonitorServer:
    def __init__(self, listen, view):
        self.view = view
        self.server = WSGIServer(listen, self._app, log=None, error_log=log, spawn=Pool(MAX_CLIENTS))

    @property
    def address(self):
        return self.server.address

    def start(self):
        self.server.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", *self.server.address[:2])
        return self

    def stop(self, timeout=1.0):
        self.server.stop(timeout=timeout)

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._answer(start_response, "200 OK", CONTENT_TYPE_LATEST, self.view.metrics_text())
        if path == "/healthz":
            healthy, document = self.view.health()
            return self._answer(start_response, "200 OK" if healthy else "503 Service Unavailable",
                                "application/json", json.dumps(document).encode())
        return self._answer(start_response, "404 Not Found", "text/plain",
                            b"crmagi monitoring: /metrics (Prometheus) and /healthz\n")

    @staticmethod
    def _answer(start_response, status, content_type, payload):
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(payload))),
                                ("Cache-Control", "no-store")])
        return [payload]
