"""`crmagi serve` with ``[tenants] dir``: one App per tenant behind shared listeners.

* FastAGI (``[agi] listen``): dispatch.pick names the tenant of each request; its App's
  CallFlow serves it.  A request for no tenant answers ``CRM_STATUS=error`` at once.
* Popups and the plugin API (``[webpush] listen``): ``/NAME/ws``, ``/NAME/plugin``,
  ``/NAME/...`` go to tenant NAME's popup server with the prefix taken off; its tokens are
  signed with its own secret and its keys live in its own database, so nothing of one
  tenant opens anything of another.
* ``/metrics`` carries a ``tenant`` label on every sample; ``/healthz`` is healthy when
  every tenant is.
* SIGHUP re-reads the folder: an added tenant starts serving, a changed one is rebuilt
  (the new App serves before the old one stops), a removed one drains: it takes no new
  call, still takes the ``hangup`` requests of its calls in progress, and stops after
  ``DRAIN_SECONDS``.  A folder that does not validate changes nothing and is logged.
"""
import logging
import signal
import time

import gevent
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from webpush.server import make_wsgi_server

from agi import config as config_mod
from agi.ops import redact
from agi.fastagi import routes
from agi.app import App, serve_until_signalled
from agi.errors import ConfigError
from agi.ops.monitor import MonitorServer
from agi.fastagi.server import FastAgiServer, Route, Router
from agi.tenants import dispatch, registry

log = logging.getLogger("crmagi.tenants")
DRAIN_SECONDS = 4 * 3600.0       # a removed tenant's calls in progress may still hang up


class TenantServer:
    def __init__(self, main, build=None, clock=time.monotonic):
        """``main``: the main Config (with [tenants] dir); ``build(config)``: a tenant's App."""
        self.main, self.clock = main, clock
        self.build = build or (lambda config, name: App(config, shared=True, tenant=name))
        self.apps, self.tenants = {}, {}        # name -> App, name -> registry.Tenant
        self.draining = {}                       # name -> (App, stop at)
        self.claims = dispatch.Claims({}, {})
        self.router = Router(routes.ROUTES)
        agi = main.agi
        self.agi = FastAgiServer(agi.listen, self.router, None, env_timeout=agi.reply_timeout,
                                 reply_timeout=agi.reply_timeout, max_sessions=agi.max_sessions, pick=self.pick)
        self.web = make_wsgi_server(main.webpush.listen, self._web, main.webpush.max_sockets)
        self.monitor = MonitorServer(main.metrics.listen, TenantsView(self))
        self._sweeper = None

    # -- the folder -------------------------------------------------------------
    def load(self):
        """Read the folder and start what changed; ConfigError (nothing changed) if it is invalid."""
        found = registry.load_folder(self.main)
        secrets = list(config_mod.secret_values(self.main))
        for tenant in found.values():
            secrets.extend(config_mod.secret_values(tenant.config))
        redact.install(secrets)          # every tenant's passwords masked in the shared log
        for name in [n for n in self.apps if n not in found]:
            self._drain(name)
        for name, tenant in found.items():
            old = self.tenants.get(name)
            if old is not None and old.digest == tenant.digest:
                continue
            app = self.build(tenant.config, name).start()
            previous = self.apps.get(name)
            self.apps[name], self.tenants[name] = app, tenant
            self.draining.pop(name, None)
            if previous is not None:
                gevent.spawn(previous.stop)
            log.info("tenant %s %s", name, "reloaded" if previous is not None else "serving")
        self.claims = dispatch.claims_of(self.tenants)
        return self

    def reload(self):
        try:
            self.load()
        except ConfigError as exc:
            log.error("tenants not reloaded (still serving the previous set): %s", exc)

    def _drain(self, name):
        app = self.apps.pop(name)
        del self.tenants[name]
        self.draining[name] = (app, self.clock() + DRAIN_SECONDS)
        log.info("tenant %s removed: draining (hangups of its calls in progress are still taken)", name)

    def _sweep(self):
        while True:
            gevent.sleep(30)
            now = self.clock()
            for name, (app, until) in list(self.draining.items()):
                if now >= until:
                    del self.draining[name]
                    app.stop()
                    log.info("tenant %s drained and stopped", name)

    # -- FastAGI ----------------------------------------------------------------
    def pick(self, env):
        picked = dispatch.pick(env, self.apps.keys() | self.draining.keys(), self.claims)
        handler = self.router.get(picked.script)
        if picked.tenant is None:
            return Route(None, None, None, "no tenant: %s" % picked.why, answer_error=handler is not None)
        app = self.apps.get(picked.tenant)
        if app is None:          # draining: only the end of a call already under way
            if picked.script != "hangup":
                return Route(None, None, None, "tenant %s was removed" % picked.tenant, answer_error=True)
            app = self.draining[picked.tenant][0]
        if handler is None:
            return Route(None, None, None, "tenant %s: unknown script %r" % (picked.tenant, picked.script))
        return Route(picked.script, handler, app.flow)

    # -- popups and the plugin API ---------------------------------------------
    def _web(self, environ, start_response):
        name, sep, rest = environ.get("PATH_INFO", "").lstrip("/").partition("/")
        app = self.apps.get(name) if sep else None
        if app is None or app.popups is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"crmagi: no such tenant (connect to /<tenant>/ws)\n"]
        environ["PATH_INFO"] = "/" + rest
        return app.popups.server._app(environ, start_response)

    # -- life -------------------------------------------------------------------
    @property
    def address(self):
        return self.agi.address

    def start(self):
        self.monitor.start()
        self.load()
        self.web.start()
        self.agi.start()
        self._sweeper = gevent.spawn(self._sweep)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        return self

    def stop(self, timeout=5.0):
        self.agi.stop(timeout=timeout)
        self.web.stop()
        if self._sweeper is not None:
            self._sweeper.kill()
        for app in list(self.apps.values()) + [app for app, _ in self.draining.values()]:
            app.stop(timeout=timeout)
        self.monitor.stop()

    def serve_forever(self, stopping=None):
        serve_until_signalled(self.stop, stopping)


class TenantsView:
    """/metrics of every tenant with a ``tenant`` label; /healthz healthy when all are."""

    def __init__(self, server):
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Labelled(server))

    def metrics_text(self):
        return generate_latest(self.registry)

    def health(self):
        reports = {name: app.health.report() for name, app in sorted(self.server.apps.items())}
        healthy = bool(reports) and all(ok for ok, _ in reports.values())
        return healthy, {"status": "ok" if healthy else "degraded",
                         "tenants": {name: document for name, (_, document) in reports.items()}}


class _Labelled:
    """A collector re-exporting each tenant's registry with ``tenant="NAME"`` on every sample."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        merged = {}
        for name, app in sorted(self.server.apps.items()):
            for family in app.metrics.registry.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                out.samples.extend(Sample(s.name, dict(s.labels, tenant=name), s.value, s.timestamp, s.exemplar)
                                   for s in family.samples)
        return list(merged.values())
