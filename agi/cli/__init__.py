"""The `crmagi` command.  gevent's monkey-patching must come before any socket import."""
import gevent
from gevent import monkey

monkey.patch_all()
# gevent keeps each greenlet's spawning stack for debugging: 2 KB per idle browser tab
# (a greenlet each) that nobody reads in production.
gevent.config.track_greenlet_tree = False

import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from agi import config as config_mod  # noqa: E402
from agi.ops import redact  # noqa: E402
from agi.cli.backfill import backfill  # noqa: E402
from agi.cli.index import index  # noqa: E402
from agi.cli.keys import keys  # noqa: E402
from agi.cli.plugin import plugin  # noqa: E402
from agi.cli.spool import spool  # noqa: E402
from agi.cli.suitecrm import suitecrm  # noqa: E402
from agi.cli.users import users  # noqa: E402
from agi.cli.options import CONFIG_OPTION, tenant_config  # noqa: E402
from agi.errors import ConfigError  # noqa: E402

log = logging.getLogger("crmagi")


def _load(config_path, overrides=None):
    try:
        return config_mod.load(config_path, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _logging(verbose):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.version_option(package_name="crmagi")
def main():
    """Asterisk <-> SuiteCRM: caller lookup, routing to the responsible user, call logging."""


@main.command()
@CONFIG_OPTION
@click.option("--listen", help="Override [agi] listen (host:port).")
@click.option("--worker", type=int, default=None, hidden=True, help="Run as worker N of [agi] workers.")
@click.option("--listen-fd", type=int, default=None, hidden=True,
              help="A worker's FastAGI socket, bound by its parent for all workers.")
@click.option("-v", "--verbose", is_flag=True)
def serve(config_path, listen, worker, listen_fd, verbose):
    """Run the FastAGI server (several worker processes with [agi] workers)."""
    import dataclasses

    from agi.ops import systemd
    from agi.app import App
    from agi.ops.workers import exit_with_parent, run_workers, worker_spool

    _logging(verbose)
    cfg = _load(config_path, {"agi": {"listen": listen}} if listen else None)
    redact.install(config_mod.secret_values(cfg))
    if cfg.tenants.dir:
        return _serve_tenants(cfg)
    try:
        config_mod.require_url(cfg)
        if cfg.agi.workers > 1 and cfg.webpush.secret and not cfg.webpush.redis_url:
            raise ConfigError("config [webpush] redis_url: required with [agi] workers > 1 (the workers "
                              "publish popups to worker 0 through Redis)")
        if worker is None and cfg.agi.workers > 1:
            sys.exit(run_workers(config_path, cfg.agi.workers, listen, metrics_listen=cfg.metrics.listen,
                                 address=cfg.agi.listen))
        if worker is not None:
            agi = dataclasses.replace(cfg.agi, spool=worker_spool(cfg.agi.spool, worker))
            cfg = dataclasses.replace(cfg, agi=agi)
        if worker is not None and listen_fd is None and cfg.agi.workers > 1:
            raise ConfigError("--worker is for the processes `crmagi serve` starts itself (they get the "
                              "FastAGI socket it binds for all of them); run `crmagi serve` without it")
        listener = None
        if listen_fd is not None:
            listener = socket.socket(fileno=listen_fd)
            listener.set_inheritable(False)
        app = App(cfg, popup_server=worker in (None, 0), worker_metrics=worker is not None,
                  listener=listener).start()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if worker in (None, 0):
        gevent.spawn(_warn_connections, cfg, app.probe_engine)
    if worker is not None:     # systemd hears only from the main process (NotifyAccess=main)
        exit_with_parent()
        app.serve_forever()
        return
    systemd.notify("READY=1\nSTATUS=FastAGI on %s:%d" % app.agi.address[:2])
    app.serve_forever(stopping=lambda: systemd.notify("STOPPING=1\nSTATUS=draining"))


def _warn_connections(cfg, engine):
    """Off the start path: a database down or slow at start must not delay serving calls."""
    from agi.ops.checks import connection_warning

    try:
        warning = connection_warning(cfg, engine)
    except Exception as exc:          # the health probe reports an unreachable CRM
        logging.getLogger("crmagi").debug("max_connections not read: %s", exc)
        return
    if warning:
        logging.getLogger("crmagi").warning(warning)


def _serve_tenants(cfg):
    from agi.ops import systemd
    from agi.tenants.server import TenantServer

    try:
        if cfg.agi.workers > 1:
            raise ConfigError("config [agi] workers: must be 1 with [tenants] dir (one process serves every tenant)")
        server = TenantServer(cfg).start()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    systemd.notify("READY=1\nSTATUS=FastAGI on %s:%d, %d tenant(s)" % (server.address[:2] + (len(server.apps),)))
    server.serve_forever(stopping=lambda: systemd.notify("STOPPING=1\nSTATUS=draining"))


@main.command()
@CONFIG_OPTION
@click.argument("number")
def lookup(config_path, number):
    """Show what a call from NUMBER matches, and why. Exit 1 when nothing matches."""
    from agi.app import build_engine, lookup_rules
    from crmsync.db import CrmUnavailable
    from crmsync.directory import Directory

    cfg = _load(config_path)
    directory = Directory(_engine(cfg, build_engine), lookup_rules(cfg))
    try:
        result = directory.lookup(number)
    except CrmUnavailable as exc:
        raise click.ClickException(redact.redact("CRM database unavailable: %s" % exc,
                                                 config_mod.secret_values(cfg))) from None
    for line in result.explain:
        click.echo("  " + line)
    caller = result.caller
    if caller is None:
        click.echo("%s: %s" % (number, result.status))
        sys.exit(1)
    owner = caller.owner
    click.echo("status:    found (rule %s, %s = %r)" % (caller.rule, caller.column, caller.stored_number))
    click.echo("module:    %s" % caller.module)
    click.echo("record id: %s" % caller.record_id)
    click.echo("name:      %s%s" % (caller.name, " (%s)" % caller.account_name if caller.account_name else ""))
    click.echo("owner:     %s" % ("%s (%s)" % (owner.full_name or owner.user_name, owner.id) if owner else "-"))
    click.echo("extension: %s" % ((owner.extension if owner else None) or "-"))


def _each_tenant(cfg):
    """[(None, cfg)] for one tenant, else [(name, tenant config)] of [tenants] dir."""
    if not cfg.tenants.dir:
        return [(None, cfg)]
    from agi.tenants.registry import load_folder

    try:
        return [(name, tenant.config) for name, tenant in load_folder(cfg).items()]
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _engine(cfg, build):
    try:
        return build(cfg)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@CONFIG_OPTION
@click.option("--fix", is_flag=True, help="Create what crmagi owns: its tables and the virtual account.")
def check(config_path, fix):
    """Validate the config and the CRM database; errors name the key or table.column."""
    from agi.ops.checks import run_checks
    from agi.ops.spoolfiles import report

    cfg = _load(config_path)
    secrets = config_mod.secret_values(cfg)
    for line in config_mod.describe(cfg):
        click.echo(line)
    if any(len(value) < redact.MIN_REDACTED for value in secrets):
        click.echo("WARNING a password or secret has fewer than %d characters: too short to be masked in "
                   "logs, and to be safe" % redact.MIN_REDACTED)

    def echo(line):
        click.echo(redact.redact(line, secrets))

    problems = []
    for name, each in _each_tenant(cfg):
        if name:
            echo("tenant %s:" % name)
        problems += run_checks(each, fix=fix, echo=echo)
        problems += report(each, echo)       # also (above all) while the CRM is down
    if problems:
        for problem in problems:     # a driver's error may quote what it was given
            click.echo("ERROR " + redact.redact(problem, secrets), err=True)
        sys.exit(1)
    click.echo("OK")


@main.command("systemd-unit")
@click.option("-c", "--config", "config_path", default="/etc/crmagi/crmagi.ini", show_default=True,
              type=click.Path(dir_okay=False), help="Config the service runs with (made absolute).")
@click.option("--user", default="crmagi", show_default=True, help="User= and Group= of the service.")
@click.option("--exec", "exec_path", type=click.Path(dir_okay=False),
              help="The crmagi executable (default: the one on PATH).")
def systemd_unit(config_path, user, exec_path):
    """Print a hardened systemd unit running `crmagi serve -c CONFIG` as USER."""
    import os
    import shutil

    from agi.ops import systemd

    exec_path = exec_path or shutil.which("crmagi")
    if not exec_path:
        raise click.ClickException("crmagi is not on PATH: give its path with --exec")
    config_path = os.path.abspath(config_path)
    spool = _load(config_path).agi.spool if os.path.exists(config_path) else None
    outside = systemd.spool_outside_state(spool)
    if outside:
        click.echo("WARNING [agi] spool = %s is outside %s: the unit lets crmagi write to %s; better "
                   "set spool = %s/crmagi-spool.sqlite" % (spool, systemd.STATE_DIRECTORY, outside,
                                                           systemd.STATE_DIRECTORY), err=True)
    try:
        unit = systemd.render_unit(exec_path=os.path.abspath(exec_path), config_path=config_path,
                                   user=user, spool=spool, source=config_path if spool else None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(unit, nl=False)


@main.command()
@CONFIG_OPTION
@click.option("--tenant", help="The include of one tenant of [tenants] dir (its AGI URLs, contexts, AstDB family).")
def dialplan(config_path, tenant):
    """Print the extensions.conf include, filled with the configured host and port."""
    from agi.dialplan import render

    cfg = tenant_config(config_path, tenant) if tenant else _load(config_path)
    click.echo(render(cfg, tenant or ""), nl=False)


@main.command()
@click.option("--dir", "directory", default="crmagi-demo", show_default=True,
              type=click.Path(file_okay=False), help="Where the demo CRM and config are created.")
@click.option("--listen", default="127.0.0.1:4573", show_default=True)
@click.option("--web", default="127.0.0.1:8088", show_default=True,
              help="Stand-in SuiteCRM pages with popups; the popup websocket uses the next port.")
@click.option("--once", is_flag=True, help="Place the demo calls, print the result and exit.")
def demo(directory, listen, web, once):
    """Start crmagi against a demo CRM it creates itself, and place test calls."""
    from agi.demo import run_demo

    _logging(False)
    sys.exit(run_demo(directory, listen, once, echo=click.echo, web=web))


main.add_command(backfill)
main.add_command(index)
main.add_command(keys)
main.add_command(plugin)
main.add_command(spool)
main.add_command(suitecrm)
main.add_command(users)

