"""`crmagi backfill`: write the calls Asterisk's CDR holds and crmagi never saw (agi/cdr/)."""
from datetime import datetime, timezone

import click

from agi import config as config_mod
from agi.cli.options import CONFIG_OPTION
from agi.errors import ConfigError


def parse_time(text, option="--since"):
    """An ISO 8601 time; UTC unless it carries an offset."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("%r is not an ISO 8601 time such as 2026-12-06T09:30 or "
                                 "2026-12-06T10:30+01:00" % text, param_hint=option) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _configs(config_path, tenant):
    """[(tenant name or "", config)]: the one given, else every tenant of [tenants] dir."""
    from agi.tenants.registry import config_of, load_folder

    try:
        cfg = config_mod.load(config_path)
        if not cfg.tenants.dir:
            return [("", config_of(cfg, tenant or config_mod.DEFAULT_TENANT))]
        if tenant:
            return [(tenant, config_of(cfg, tenant))]
        return [(name, each.config) for name, each in load_folder(cfg).items()]
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@CONFIG_OPTION
@click.option("--since", required=True, help="Start of the window, ISO 8601 (UTC unless it carries an offset).")
@click.option("--until", help="End of the window (default: now).")
@click.option("--tenant", help="One tenant of [tenants] dir (default: each tenant in turn).")
def backfill(config_path, since, until, tenant):
    """Write the calls of Asterisk's CDR ([cdr] csv or url) that crmagi never saw."""
    from agi.app import App
    from agi.cdr import backfill as backfill_mod
    from agi.ops import redact
    from crmsync.db import CrmUnavailable, SchemaError

    start, end = parse_time(since), parse_time(until, "--until") if until else None
    failed = False
    for name, cfg in _configs(config_path, tenant):
        secrets = config_mod.secret_values(cfg)
        try:
            app = App(cfg, popup_server=False, shared=True, tenant=name)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            report = backfill_mod.run(app, start, end, tenant=name, engine_for=backfill_mod.engine)
        except (ConfigError, CrmUnavailable, SchemaError) as exc:
            raise click.ClickException(redact.redact(str(exc), secrets)) from None
        finally:
            app.stop(timeout=1)      # flushes what the CRM took late; the rest stays spooled
        for problem in report.problems:
            click.echo("WARNING CDR %s" % problem, err=True)
        click.echo("%s%s" % ("tenant %s: " % name if name else "", report.summary()))
        failed = failed or bool(report.spooled)
    if failed:
        raise click.ClickException("some calls wait in the spool: the CRM did not take them "
                                   "(`crmagi spool list`; the service writes them when it can)")
