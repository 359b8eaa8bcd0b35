"""Composition root: turns the Config into plain arguments for crmsync and the servers.

``App(config).start()`` is what `crmagi serve` runs and what the tests start
on port 0; ``stop(timeout)`` drains running sessions, then flushes the spool.
"""
import logging
import os
import sqlite3

import gevent

from crmlocale import catalogues, dates
from crmsync.calls import CallStore
from crmsync.db import make_engine, make_probe_engine, ping, watch_errors
from crmsync.directory import Directory
from crmsync.linking import Linker
from crmsync.livecalls import LiveCalls
from crmsync.missed import MissedCalls
from crmsync.models import LookupRules, ModuleSpec
from crmsync.spool import Spool
from crmsync.userlocale import site_of
from crmsync.userprefs import SeenRecorder, UserPrefs
from crmsync.writer import CallWriter

from agi.ops import metrics as metrics_mod
from agi.fastagi import ended, routes
from agi.config import DEFAULT_TENANT, require_url
from agi.errors import ConfigError
from agi.ops.health import Health
from agi.ops.monitor import LocalView, MonitorServer
from agi.fastagi.server import FastAgiServer, Router

log = logging.getLogger("crmagi")


def module_specs(config):
    return tuple(ModuleSpec(name=m.name, table=m.table, phone_fields=m.phone_fields,
                            name_fields=m.name_fields, link_table=m.link_table,
                            link_column=m.link_column) for m in config.modules)


def lookup_rules(config):
    return LookupRules(modules=module_specs(config), default_region=config.lookup.default_region,
                       internal_max_digits=config.lookup.internal_max_digits,
                       suffix_digits=config.lookup.suffix_digits,
                       extension_field=config.users.extension_field)


def build_missed(config, engine, directory):
    """Missed calls ([crm] missed_calls), or None.  Callers without a responsible user go to
    the users of [webpush] fallback_extensions, named when the call is written (a CRM that
    cannot say fails the write, which is then retried from the spool)."""
    if not config.crm.missed_calls:
        return None

    def fallback_users():
        users = (directory.user_by_extension(ext) for ext in config.webpush.fallback_extensions)
        return [user.id for user in users if user is not None]

    site = site_of(config.crm)
    return MissedCalls(engine, region=config.lookup.default_region, system_user=config.crm.system_user,
                       fallback_users=fallback_users, gettext=catalogues.language(site.language).gettext,
                       when=lambda moment: dates.display(moment, site.date_format, site.time_format, site.timezone))


def build_engine(config, read_only=False):
    crm = config.crm
    return make_engine(require_url(config), pool_size=crm.pool_size, connect_timeout=crm.connect_timeout,
                       query_timeout=crm.query_timeout, read_only=read_only)


def open_spool(config, path=None):
    """The spool file of the config (or ``path``, a worker's); a folder crmagi may not
    create is a config error naming the key, not a traceback."""
    path = path or config.agi.spool
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return Spool(path, max_bytes=int(config.agi.spool_max_mb * 1e6))
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError("config [agi] spool: cannot open %s (%s); set [agi] spool to a writable file, or "
                          "run under systemd with StateDirectory=crmagi" % (path, exc)) from None


class App:
    def __init__(self, config, engine=None, popup_server=True, worker_metrics=False, shared=False, tenant="",
                 listener=None):
        """``popup_server`` False: a FastAGI worker that only publishes popup events (over
        Redis) for worker 0, which holds the browsers' sockets and follows AMI.
        ``worker_metrics``: one worker of several; its metrics go to PROMETHEUS_MULTIPROC_DIR
        and the parent (agi/ops/workers.py) serves them all on [metrics] listen.
        ``shared``: one tenant of agi/tenants/server.py, which owns the FastAGI, popup and
        metrics listeners and hands this App its requests; it opens none itself.  ``tenant``:
        that tenant's name (its AstDB family, its plugin keys).  ``listener``: the FastAGI
        socket the parent of several workers bound for all of them (agi/ops/workers.py)."""
        self.config = config
        self.shared = shared
        self.tenant = tenant or DEFAULT_TENANT
        self.tenant_name = tenant        # "" without [tenants]: no suffix on the include's contexts
        self.metrics = metrics_mod.Metrics(multiprocess=worker_metrics)
        self.engine = engine or build_engine(config)
        # Lookups get their own autocommit pool: one round trip less each (crmsync/db.py).
        self.read_engine = build_engine(config, read_only=True) if engine is None else engine
        # The health probe's own connections: a pool drained by a burst of calls is not an outage.
        self.probe_engine = make_probe_engine(require_url(config)) if engine is None else engine
        for watched in {self.engine, self.read_engine}:
            watch_errors(watched, self.metrics.db_error)
        self.directory = Directory(self.read_engine, lookup_rules(config))
        self.missed = build_missed(config, self.engine, self.directory)
        self.store = CallStore(self.engine, system_user=config.crm.system_user, missed=self.missed,
                               gettext=catalogues.language(config.crm.default_language).gettext,
                               write_lanes=config.crm.write_lanes, write_wait=config.crm.query_timeout)
        self.spool = open_spool(config)
        linker = Linker(self.directory, {spec.name: spec for spec in module_specs(config)},
                        anonymous_account=config.lookup.anonymous_account)
        self.writer = CallWriter(self.store, self.spool, timeout=config.crm.query_timeout,
                                 flush_interval=config.agi.flush_interval, live=LiveCalls(self.store),
                                 resolve=linker.resolve, max_attempts=config.agi.spool_max_attempts,
                                 on_write=self.metrics.call_write)
        self.flow = routes.CallFlow(
            directory=self.metrics.timed(self.directory), writer=self.writer, call_id_for=CallStore.call_id_for,
            linker=linker,
            timeout=config.agi.timeout, set_callerid_name=config.agi.set_callerid_name,
            log_internal=config.agi.log_internal,
            internal_max_digits=config.lookup.internal_max_digits, system_name=config.agi.system_name,
            late_lookup_wait=config.crm.query_timeout, click_secret=config.webpush.secret,
            ended_family=ended.family_of(tenant))
        self.live = self.ami = self.popups = self.click2call = self.plugin = self.plugin_effects = None
        self.backfill = None             # the greenlet of the backfill on start ([cdr] backfill_on_start)
        # One process follows AMI: with [agi] workers > 1, each worker parsing the whole stream
        # and writing every update twice cost a third of a call's CPU.  The others' calls get
        # their updates from worker 0 (an update that beats its row waits: LiveUpdate.awaited).
        if config.ami.host and popup_server:
            from agi.ami import live
            self.live, self.ami = live.build(config, self.directory, self.writer, CallStore.call_id_for)
        if config.webpush.secret:
            self._build_popups(popup_server)
        self.agi = None if shared else FastAgiServer(
            config.agi.listen, Router(routes.ROUTES), self.flow, env_timeout=config.agi.reply_timeout,
            reply_timeout=config.agi.reply_timeout, max_sessions=config.agi.max_sessions,
            listener=listener, observe=self.metrics.agi_answered)
        self._instrument(worker_metrics)

    def _instrument(self, worker_metrics):
        """Readings for /metrics, the health probe, and where they are served."""
        self.health = Health(lambda: ping(self.probe_engine), self.spool, self.ami,
                             interval=self.config.metrics.probe_interval)
        self.metrics.read(metrics_mod.spool_reading(self.spool))
        self.metrics.read(metrics_mod.crm_reading(self.health))
        self.metrics.read(metrics_mod.writes_reading(self.store.group))
        if self.ami is not None:
            self.metrics.read(metrics_mod.ami_reading(self.ami))
            self.metrics.read(metrics_mod.live_reading(self.live))
        if self.popups is not None:
            self.metrics.read(metrics_mod.popups_reading(self.popups.hub, self.popups.book))
        self.sampler = self.metrics.sampler() if worker_metrics else None
        self.monitor = None if worker_metrics or self.shared else MonitorServer(self.config.metrics.listen,
                                                                  LocalView(self.metrics, self.health))

    def _build_popups(self, serve):
        from agi import push

        if not serve:
            self.flow.notify = push.Publisher(self.config).on_agi
            return
        transfer = dial = None
        if self.live is not None:
            from agi.ami.click2call import ClickToCall
            from agi.ami.live import Transfers
            ami = self.config.ami
            transfer = Transfers(self.live.model, self.ami, ami.transfer_context, ami.agent_context)
            self.click2call = ClickToCall(ami, self.ami, self.live.model, self.directory, self.config.webpush.secret,
                                          internal_max_digits=self.config.lookup.internal_max_digits)
            self.live.observe = self.click2call.on_event
            dial = self.click2call.request
        self.popups = push.Popups(self.config, self.directory, self.read_engine, transfer, dial, missed=self.missed)
        self.flow.notify = self.popups.service.on_agi
        if self.live is not None:
            self.live.notify = self.popups.service.on_ami
        self.popups.service.on_seen = SeenRecorder(UserPrefs(self.engine))
        from agi.plugin import wiring

        self.plugin = wiring.build(self)
        self.popups.service.transfer_call = wiring.route_transfers(transfer, self.plugin)

    def start(self):
        if self.monitor is not None:
            self.monitor.start()      # first: a port in use fails the start before anything runs
        try:
            self.store.ensure_tables()
            UserPrefs(self.engine).ensure_table()
        except Exception as exc:   # the CRM may be down at boot: calls are spooled meanwhile
            log.warning("cannot prepare crmagi tables yet (%s); will write calls when the CRM is back", exc)
        self.writer.start()
        self.health.start()
        if self.sampler is not None:
            self.sampler.start()
        if self.popups is not None:
            self.popups.start(listen=not self.shared)
        for part in (self.plugin_effects, self.plugin):
            if part is not None:
                part.start()
        if self.agi is not None:
            self.agi.start()
        if self.ami is not None:
            self.live.start()
            self.ami.start()
        gevent.spawn(self._warm_up)
        cdr = self.config.cdr
        if cdr.backfill_on_start and (cdr.csv or cdr.url):
            from agi.cdr import backfill

            self.backfill = gevent.spawn(backfill.on_start, self, self.tenant_name)
        return self

    def _warm_up(self):
        """Reflect the tables and load the users before the first call, not during it."""
        try:
            self.directory.problems()
            self.directory.user(self.config.crm.system_user)
            self.directory.lookup("+1 650 253 0000")    # also loads phonenumbers' metadata
            if self.popups is not None:
                self.popups.warm_up()
        except Exception as exc:
            log.warning("CRM not ready yet (%s); lookups answer CRM_STATUS=error until it is", exc)

    def stop(self, timeout=5.0):
        if self.agi is not None:
            # New calls are refused at once: what follows may take seconds (the backfill, the
            # AMI effects), and a call queued meanwhile would wait for nothing.
            self.agi.close()
        if self.backfill is not None:    # a write it began is durable: the spool finishes it
            self.backfill.join(timeout)
            self.backfill.kill()
        if self.ami is not None:
            self.ami.stop()
            self.live.stop()
        if self.agi is not None:
            self.agi.stop(timeout=timeout)
        for part in (self.plugin, self.plugin_effects):
            if part is not None:
                part.stop()
        if self.popups is not None:
            self.popups.stop()
        self.writer.stop()
        self.health.stop()
        for part in (self.sampler, self.monitor):
            if part is not None:
                part.stop()
        for engine in {self.engine, self.read_engine, self.probe_engine}:
            engine.dispose()

    def serve_forever(self, stopping=None):
        serve_until_signalled(self.stop, stopping)


def serve_until_signalled(stop, stopping=None):
    """Serve until SIGTERM/SIGINT, then drain with ``stop()``; ``stopping()`` is called first
    (sd_notify).  One App, or agi/tenants/server.py's TenantServer."""
    import signal

    stopped = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopped.set)
    stopped.wait()
    log.info("stopping: draining FastAGI sessions")
    if stopping is not None:
        stopping()
    stop()
