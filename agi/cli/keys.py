"""`crmagi keys create|list|revoke`: the API keys of the plugin API (/plugin).

A key is printed once, at creation; the tenant's database keeps only its scrypt hash
(crmsync/apikeys.py).  ``--tenant`` names a file of ``[tenants] dir``; a config without
``[tenants]`` is one tenant, named ``default``.
"""
import click

from agi.cli.options import CONFIG_OPTION, TENANT_OPTION, tenant_config
from agi.errors import ConfigError


def _store(config_path, tenant):
    from crmsync.apikeys import KeyStore
    from agi.app import build_engine

    cfg = tenant_config(config_path, tenant)
    try:
        return KeyStore(build_engine(cfg), tenant)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _errors(func, *args):
    from sqlalchemy.exc import SQLAlchemyError
    from crmsync.apikeys import ApiKeyError

    try:
        return func(*args)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException("CRM database: %s" % getattr(exc, "orig", exc)) from None


@click.group()
def keys():
    """API keys of the plugin websocket (/plugin): create, list, revoke."""


@keys.command()
@CONFIG_OPTION
@TENANT_OPTION
@click.option("--name", "label", required=True, help="What the key is for (e.g. 'freeswitch-1').")
@click.option("--scope", "scopes", required=True, help="Comma-separated: events, lookup, originate.")
def create(config_path, tenant, label, scopes):
    """Create a key and print it, once: only its hash is kept."""
    key, secret = _errors(_store(config_path, tenant).create, label, scopes)
    click.echo("key id: %s (%s; scopes %s)" % (key.key_id, key.label, ",".join(key.scopes)))
    click.echo(secret)
    click.echo("store it now: crmagi keeps only a hash and cannot show it again", err=True)


@keys.command("list")
@CONFIG_OPTION
@TENANT_OPTION
def list_keys(config_path, tenant):
    """The keys of the tenant: id, label, scopes, created, last used, revoked."""
    rows = _errors(_store(config_path, tenant).list)
    click.echo("%-16s  %-20s  %-22s  %-19s  %-19s  %s" % ("KEY ID", "LABEL", "SCOPES", "CREATED (UTC)",
                                                          "LAST USED (UTC)", "REVOKED (UTC)"))
    for key in rows:
        click.echo("%-16s  %-20s  %-22s  %-19s  %-19s  %s" % (
            key.key_id, key.label[:20], ",".join(key.scopes), key.created_at, key.last_used_at or "-",
            key.revoked_at or "-"))


@keys.command()
@CONFIG_OPTION
@TENANT_OPTION
@click.argument("key_id")
def revoke(config_path, tenant, key_id):
    """Revoke a key: its open plugin sockets close within a second."""
    if not _errors(_store(config_path, tenant).revoke, key_id):
        raise click.ClickException("no active key %s for tenant %s" % (key_id, tenant))
    click.echo("revoked %s" % key_id)
