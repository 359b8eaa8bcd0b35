"""Options shared by the `crmagi` command groups."""
import click

from agi import config as config_mod
from agi.errors import ConfigError

CONFIG_OPTION = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                             envvar="CRMAGI_CONFIG", help="INI file (see README.rst, Configuration).")
TENANT_OPTION = click.option("--tenant", default=config_mod.DEFAULT_TENANT, show_default=True,
                             help="A tenant of [tenants] dir (a config without [tenants] is the one tenant).")


def tenant_config(config_path, tenant):
    """The config of ``--tenant``; a config error is the command's one-line error."""
    from agi.tenants.registry import config_of

    try:
        return config_of(config_mod.load(config_path), tenant)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
