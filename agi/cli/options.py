"""Options shared by the `crmagi` command groups."""
import click

CONFIG_OPTION = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                             envvar="CRMAGI_CONFIG", help="INI file (see README.rst, Configuration).")
