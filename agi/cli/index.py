"""`crmagi index …`: install, rebuild, check and uninstall the trigger-kept phone index.

Registered on the `crmagi` group by agi/cli/__init__.py.  Order of operations for a new
install or a change of ``[lookup] modules`` / ``phone_fields``: ``install`` (the
triggers start keeping the index current), then ``rebuild`` (fills it, safe
while CRM users work).  Lookups use the index from then on.
"""
import sys
import time
from contextlib import contextmanager

import click

from agi import config as config_mod
from agi.cli.options import CONFIG_OPTION
from agi.errors import ConfigError

ADMIN_QUERY_TIMEOUT = 600.0    # seconds: admin commands read whole tables; lookups keep [crm] query_timeout


@contextmanager
def _errors():
    """Known failures become one-line messages (exit 1)."""
    from sqlalchemy.exc import SQLAlchemyError

    from crmsync.db import CrmUnavailable, SchemaError
    from crmsync.phoneindex import PhoneIndexError

    try:
        yield
    except (ConfigError, SchemaError, PhoneIndexError, CrmUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException("CRM database: %s" % str(getattr(exc, "orig", None) or exc).splitlines()[0]) \
            from None


def _phone_index(config_path, batch_size=2000):
    from crmsync.db import make_engine
    from crmsync.phoneindex import PhoneIndex

    from agi.app import lookup_rules

    cfg = config_mod.load(config_path)
    engine = make_engine(config_mod.require_url(cfg), pool_size=2, connect_timeout=cfg.crm.connect_timeout,
                         query_timeout=max(cfg.crm.query_timeout, ADMIN_QUERY_TIMEOUT))
    phone_index = PhoneIndex(engine, lookup_rules(cfg), batch_size=batch_size)
    phone_index.require_supported()
    return phone_index


def _status(index):
    ready, why = index.status()
    click.echo("lookups use the index: %s (%s)" % ("yes" if ready else "no", why))
    return ready


@click.group("index")
def index():
    """The phone index (crmagi_phone_index): lookups read it instead of scanning every phone column."""


@index.command()
@CONFIG_OPTION
def install(config_path):
    """Create the index table and the triggers on the configured tables (idempotent)."""
    with _errors():
        phone_index = _phone_index(config_path)
        changes = phone_index.install_triggers()
        for line in changes:
            click.echo(line)
        if not changes:
            click.echo("triggers already installed as configured")
        if not _status(phone_index):
            click.echo("next: crmagi index rebuild")


@index.command()
@CONFIG_OPTION
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(10, 100000),
              help="Records read per batch.")
@click.option("--full", is_flag=True, help="Recompute e164/national of every row, not only of changed ones.")
def rebuild(config_path, batch_size, full):
    """Fill the index from the CRM tables; safe to rerun and safe while users edit numbers."""
    with _errors():
        phone_index = _phone_index(config_path, batch_size)
        started = time.monotonic()
        with click.progressbar(length=phone_index.source_count(), label="indexing records") as bar:
            phone_index.rebuild(progress=bar.update, full=full)
        stats = phone_index.last_rebuild
        elapsed = time.monotonic() - started
        click.echo("%d record(s) read, %d row(s) written, %d row(s) deleted in %.1f s (%d records/s)" % (
            stats.records, stats.written, stats.deleted, elapsed, stats.records / elapsed if elapsed else 0))
        _status(phone_index)


@index.command()
@CONFIG_OPTION
@click.option("--sample", type=click.IntRange(1), help="Check this many records per module, from a random point.")
def check(config_path, sample):
    """Report index rows that disagree with the CRM tables; exit 1 if any, or if lookups cannot use it."""
    with _errors():
        phone_index = _phone_index(config_path)
        problems = phone_index.check(sample=sample)
        for problem in problems:
            click.echo("DISAGREE " + problem)
        pending = phone_index.pending()
        if pending:
            click.echo("%d row(s) await e164/national (written by a trigger; `crmagi index rebuild` fills them)"
                       % pending)
        ready = _status(phone_index)
    if problems or not ready:
        sys.exit(1)
    click.echo("OK")


@index.command()
@CONFIG_OPTION
@click.option("--keep-table", is_flag=True, help="Drop only the triggers, keep crmagi_phone_index.")
def uninstall(config_path, keep_table):
    """Drop the crmagi triggers (and the index table): lookups scan again."""
    with _errors():
        phone_index = _phone_index(config_path)
        for line in phone_index.uninstall_triggers():
            click.echo(line)
        if not keep_table:
            phone_index.drop_table()
            click.echo("dropped the index tables")
