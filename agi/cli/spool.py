"""`crmagi spool …`: what waits in the spool, and the dead letters an operator acts on.

Safe while `crmagi serve` runs: the spool is SQLite in WAL mode, and a retried op
is picked up by the server's next flush.  Op ids are per file; with ``[agi]
workers`` > 1, ``--file`` names the worker's file (``crmagi spool list`` shows it).
"""
import json
import sys

import click

from agi import config as config_mod
from agi.cli.options import CONFIG_OPTION
from agi.ops.redact import redact
from agi.errors import ConfigError
from agi.ops.spoolfiles import open_existing, when

FILE_OPTION = click.option("--file", "only", help="Only this spool file (with [agi] workers > 1).")


def _spools(config_path, only):
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    spools = [(path, spool) for path, spool in open_existing(cfg) if not only or path == only]
    if only and not spools:
        raise click.ClickException("no spool file %s (see `crmagi spool list`)" % only)
    return spools


def _summary(op):
    try:
        data = json.loads(op.payload)
    except ValueError:
        return "undecodable payload"
    if not isinstance(data, dict):
        return "undecodable payload"
    if op.kind == "live":
        return "%s %s" % (data.get("kind", "?"), data.get("extension") or data.get("path") or "")
    return "%s %s %s" % (data.get("direction", "?"), data.get("number") or "-", data.get("linkedid", ""))


@click.group()
def spool():
    """Show and act on call writes waiting in the spool."""


@spool.command("list")
@CONFIG_OPTION
@FILE_OPTION
@click.option("--limit", default=50, show_default=True, help="Ops shown per file and state.")
def list_ops(config_path, only, limit):
    """Pending ops and dead letters, oldest first."""
    spools = _spools(config_path, only)
    secrets = config_mod.secret_values(config_mod.load(config_path))   # errors came from drivers
    for path, store in spools:
        with_dead = [("dead", op) for op in store.dead(limit)]
        rows = [("pending", op) for op in store.pending(limit)] + with_dead
        stats = store.stats()
        store.close()
        click.echo("%s: %d pending, %d dead" % (path, stats.pending, stats.dead))
        for state, op in rows:
            click.echo("  %-7s %6d  %-6s call %s  %s  attempts %d  queued %s" % (
                state, op.id, op.kind, op.call_id or "-", _summary(op), op.attempts, when(op.created)))
            if op.last_error:
                click.echo("          last error: %s" % redact(op.last_error.splitlines()[0][:300], secrets))


@spool.command()
@CONFIG_OPTION
@FILE_OPTION
@click.argument("op_id", type=int, required=False)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
def retry(config_path, only, op_id, everything):
    """Put dead letter OP_ID (or --all) back in the queue, in its old place."""
    if (op_id is None) == (not everything):
        raise click.UsageError("give one OP_ID or --all")
    moved = 0
    for _, store in _spools(config_path, only):
        moved += store.retry(None if everything else op_id)
        store.close()
    if op_id is not None and not moved:
        raise click.ClickException("no dead letter %d" % op_id)
    click.echo("%d op(s) queued again; crmagi serve applies them at its next flush" % moved)


@spool.command()
@CONFIG_OPTION
@FILE_OPTION
@click.argument("op_id", type=int)
def drop(config_path, only, op_id):
    """Delete op OP_ID for good (its call write is lost: list it first)."""
    spools = _spools(config_path, only)
    if len(spools) > 1 and not only:
        raise click.UsageError("several spool files: say which with --file")
    for path, store in spools:
        state = store.drop(op_id)
        store.close()
        if state:
            click.echo("dropped %s op %d from %s" % (state, op_id, path))
            return
    click.echo("no op %d" % op_id, err=True)
    sys.exit(1)
