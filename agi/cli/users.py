"""`crmagi users list|set`: the CRM users crmagi knows, and what crmagi keeps about them.

Extensions come from SuiteCRM (``[users] extension_field``); devices, agent ids and
popups on/off are crmagi's own (crmsync/userprefs.py), in the tenant's database.
"""
import click

from agi.cli.options import CONFIG_OPTION, TENANT_OPTION, tenant_config


def _directory_and_prefs(cfg):
    from crmsync.directory import Directory
    from crmsync.userprefs import UserPrefs
    from agi.app import build_engine, lookup_rules

    engine = build_engine(cfg)
    return Directory(engine, lookup_rules(cfg)), UserPrefs(engine)


def _on_off(value):
    return None if value is None else value == "on"


@click.group()
def users():
    """The CRM users crmagi knows: extensions, devices, agent ids, popups, last seen."""


@users.command("list")
@CONFIG_OPTION
@TENANT_OPTION
def list_users(config_path, tenant):
    """Active CRM users with their extension, devices, agent ids, popups and last seen (UTC)."""
    from crmsync.db import CrmUnavailable

    directory, prefs = _directory_and_prefs(tenant_config(config_path, tenant))
    try:
        people, seen = directory.users(), prefs.load()
    except CrmUnavailable as exc:
        raise click.ClickException("CRM database unavailable: %s" % exc) from None
    click.echo("%-36s  %-12s  %-22s  %-9s  %-14s  %-10s  %-6s  %s" % (
        "USER ID", "USER NAME", "NAME", "EXTENSION", "DEVICES", "AGENTS", "POPUPS", "LAST SEEN (UTC)"))
    for user in people:
        last = seen[user.id].last_seen_at if user.id in seen else None
        click.echo("%-36s  %-12s  %-22s  %-9s  %-14s  %-10s  %-6s  %s" % (
            user.id, user.user_name[:12], user.full_name[:22], user.extension or "-",
            ",".join(user.devices) or "-", ",".join(user.agents) or "-", "on" if user.popups else "off",
            last or "-"))


@users.command("set")
@CONFIG_OPTION
@TENANT_OPTION
@click.argument("user")
@click.option("--devices", help="More extensions of the user, comma-separated ('' clears).")
@click.option("--agents", help="app_agent_pool agent ids of the user, comma-separated ('' clears).")
@click.option("--popups", type=click.Choice(["on", "off"]), help="Show the user call popups.")
def set_user(config_path, tenant, user, devices, agents, popups):
    """Change USER (user name or users.id): devices, agent ids, popups."""
    from crmsync.userprefs import parse_extensions

    directory, prefs = _directory_and_prefs(tenant_config(config_path, tenant))
    found = [u for u in directory.users() if user in (u.id, u.user_name)]
    if not found:
        raise click.ClickException("no active CRM user %r (see `crmagi users list`)" % user)
    try:
        parsed = {name: None if value is None else parse_extensions(value, name)
                  for name, value in (("devices", devices), ("agents", agents))}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    taken = {ext: u for u in directory.users() if u.id != found[0].id
             for ext in (u.extension,) + u.devices + u.agents if ext}
    clash = [ext for values in parsed.values() if values for ext in values if ext in taken]
    if clash:
        raise click.ClickException("%s already belongs to %s" % (clash[0], taken[clash[0]].user_name))
    prefs.set(found[0].id, devices=parsed["devices"], agents=parsed["agents"], popups=_on_off(popups))
    click.echo("%s: updated (crmagi serve picks it up within 30 s)" % found[0].user_name)
