"""`crmagi suitecrm install|uninstall PATH`: the SuiteCRM side of the call popup.

Registered on the `crmagi` group by agi/cli/__init__.py.  The files are written by
webpush/installer.py from the [webpush] section; this module only turns the
config into the installer's arguments and errors into one-line messages.
"""
from contextlib import contextmanager

import click

from agi import __version__
from agi import config as config_mod
from agi.cli.options import CONFIG_OPTION
from agi.errors import ConfigError

# A browser cannot connect to these: the admin must say which address browsers use.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
# Browsers reach these only on the crmagi box itself (or through a proxy public_url names).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@contextmanager
def _errors():
    from webpush.installer import InstallError

    try:
        yield
    except (ConfigError, InstallError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException("%s: %s" % (exc.filename or "file system", exc.strerror or exc)) from None


def websocket_url(webpush) -> str:
    """[webpush] public_url, else derived from [webpush] listen."""
    if webpush.public_url:
        return webpush.public_url
    host, port = webpush.listen
    if host in WILDCARD_HOSTS:
        raise ConfigError("config [webpush] public_url: required because [webpush] listen is %s:%d, which "
                          "browsers cannot connect to; set it to e.g. ws://crm.example.com:%d/ws" % (host, port, port))
    return "ws://%s:%d/ws" % ("[%s]" % host if ":" in host else host, port)


def tenant_url(url, tenant):
    """A tenant's socket behind the shared listener: .../ws -> .../NAME/ws."""
    if not tenant:
        return url
    base = url[:-3] if url.endswith("/ws") else url.rstrip("/")
    return "%s/%s/ws" % (base, tenant)


@click.group("suitecrm")
def suitecrm():
    """The SuiteCRM package: a logic hook that loads the call popup into every page."""


@suitecrm.command()
@CONFIG_OPTION
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Install even if PATH does not look like a SuiteCRM root.")
@click.option("--tenant", help="The SuiteCRM of this tenant of [tenants] dir (its secret, its /NAME/ws).")
def install(config_path, path, force, tenant):
    """Copy the hook, its config and popup.js/css into the SuiteCRM root PATH (idempotent)."""
    from webpush.installer import install as run_install
    from agi.tenants.registry import config_of

    with _errors():
        main = config_mod.load(config_path)
        webpush = config_of(main, tenant).webpush if tenant else main.webpush
        if not webpush.secret:
            raise ConfigError("config [webpush] secret: required (e.g. the output of `openssl rand -hex 32`)")
        report = run_install(path, secret=webpush.secret, ws_url=tenant_url(websocket_url(main.webpush), tenant),
                             token_seconds=webpush.token_seconds, version=__version__, force=force)
    if not webpush.public_url and webpush.listen[0] in LOOPBACK_HOSTS:
        click.echo("WARNING browsers on other machines cannot reach %s: set [webpush] public_url and "
                   "install again" % websocket_url(webpush))
    for line in report.lines():
        click.echo(line)


@suitecrm.command()
@click.argument("path", type=click.Path(file_okay=False))
def uninstall(path):
    """Remove exactly the files and directories `install` created under PATH."""
    from webpush.installer import uninstall as run_uninstall

    with _errors():
        report = run_uninstall(path)
    for line in report.lines():
        click.echo(line)
