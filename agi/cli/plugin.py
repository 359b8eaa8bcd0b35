"""`crmagi plugin replay FILE`: play a JSON scenario of plugin messages against a running crmagi.

For integrators writing a plugin for another PBX: the scenario is what their PBX would
send (see tests/plugin_scenarios/ for the recorded Asterisk calls written that way), and
each answer is printed.  The key comes from ``--key-file`` or CRMAGI_PLUGIN_KEY, never
from the command line, so it does not land in shell history or ``ps``.
"""
import json
import os
import sys

import click

from agi import config as config_mod
from agi.cli.options import CONFIG_OPTION
from agi.errors import ConfigError


def _url(config_path, url, tenant):
    """--url, else ws://<[webpush] listen>/plugin (/<tenant>/plugin with [tenants] dir)."""
    if url:
        return url
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    host, port = cfg.webpush.listen
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    prefix = "/" + tenant if cfg.tenants.dir else ""
    return "ws://%s:%d%s/plugin" % ("[%s]" % host if ":" in host else host, port, prefix)


def _key(key_file):
    if key_file:
        with open(key_file, encoding="ascii") as handle:
            return handle.read().strip()
    key = os.environ.get("CRMAGI_PLUGIN_KEY", "").strip()
    if not key:
        raise click.ClickException("no key: use --key-file FILE or set CRMAGI_PLUGIN_KEY")
    return key


@click.group()
def plugin():
    """The plugin API (/plugin): tools for integrators."""


@plugin.command()
@CONFIG_OPTION
@click.option("--tenant", default=config_mod.DEFAULT_TENANT, show_default=True,
              help="The tenant the key belongs to (checked against crmagi's welcome).")
@click.option("--url", help="ws://host:port/plugin (default: from [webpush] listen).")
@click.option("--key-file", type=click.Path(dir_okay=False, exists=True), help="File holding the API key.")
@click.argument("scenario", type=click.Path(dir_okay=False, exists=True))
def replay(config_path, tenant, url, key_file, scenario):
    """Send the messages of SCENARIO (a JSON list) in order and print crmagi's answers."""
    from agi.plugin.client import PluginClient, PluginError, load_scenario, replay as run

    try:
        steps = load_scenario(scenario)
        client = PluginClient(_url(config_path, url, tenant), _key(key_file)).connect()
    except (PluginError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if client.welcome["tenant"] != tenant:
        raise click.ClickException("the key is for tenant %r, not %r" % (client.welcome["tenant"], tenant))
    failed = 0
    try:
        for message, answer in run(client, steps):
            failed += answer["type"] in ("error", "refused")
            click.echo("%s -> %s" % (json.dumps(message, ensure_ascii=False), json.dumps(answer, ensure_ascii=False)))
    finally:
        client.close()
    if failed:
        click.echo("%d message(s) refused" % failed, err=True)
        sys.exit(1)
