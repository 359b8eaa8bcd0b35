"""The tenants folder: one NAME.ini per tenant, each a normal crmagi config, validated.

Server-wide settings (the listeners, workers, metrics, the folder itself) belong to the
main file: a tenant file setting one is an error naming the file and the key, not a
setting silently ignored.  Two tenants never share a spool file or a claim.
"""
import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Dict

from agi import config as config_mod
from agi.errors import ConfigError

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# (section, key) a tenant file may not set: they are the shared server's.
SERVER_WIDE = {("agi", "listen"), ("agi", "workers"), ("agi", "max_sessions"), ("webpush", "listen"),
               ("webpush", "public_url"), ("webpush", "max_sockets"), ("metrics", "listen"),
               ("metrics", "probe_interval"), ("tenants", "dir")}


@dataclass(frozen=True)
class Tenant:
    name: str
    config: object           # agi.config.Config
    digest: str              # of the file's bytes: a changed file is reloaded


def load_folder(main) -> Dict[str, Tenant]:
    """{name: Tenant} of main.tenants.dir, every file validated; ConfigError names the problem."""
    folder = main.tenants.dir
    if main.source and not os.path.isabs(folder):
        folder = os.path.join(os.path.dirname(os.path.abspath(main.source)), folder)
    try:
        names = sorted(entry for entry in os.listdir(folder) if entry.endswith(".ini"))
    except OSError as exc:
        raise ConfigError("config [tenants] dir: cannot list %s (%s)" % (folder, exc.strerror)) from None
    tenants = {}
    for entry in names:
        tenant = load_one(os.path.join(folder, entry), main)
        tenants[tenant.name] = tenant
    _check_apart(tenants)
    return tenants


def config_of(main, name):
    """The config of tenant ``name`` (for `crmagi keys`, `dialplan`, `suitecrm install`), or
    ``main`` itself when it has no [tenants] and ``name`` is the default tenant."""
    if not main.tenants.dir:
        if name != config_mod.DEFAULT_TENANT:
            raise ConfigError("--tenant %s: this config has no [tenants] dir; its one tenant is %r"
                              % (name, config_mod.DEFAULT_TENANT))
        return main
    tenants = load_folder(main)
    if name not in tenants:
        raise ConfigError("--tenant %s: no %s.ini in [tenants] dir (tenants: %s)"
                          % (name, name, ", ".join(sorted(tenants)) or "none"))
    return tenants[name].config


def load_one(path, main) -> Tenant:
    name = os.path.basename(path)[:-4]
    if not NAME.match(name):
        raise ConfigError("tenant file %s: the name must match [a-z0-9][a-z0-9_-]{0,31} (it is part of URLs)" % path)
    raw = config_mod._read_ini(path)
    for section, values in raw.items():
        for key in values:
            if (section, key) in SERVER_WIDE:
                raise ConfigError("tenant file %s [%s] %s: server-wide, set it in the main config only"
                                  % (path, section, key))
    cfg = config_mod.load(path, environ={})
    # The shared listeners are the main file's; a tenant's App only reads them for URLs.
    cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, listen=main.agi.listen),
                              webpush=dataclasses.replace(cfg.webpush, listen=main.webpush.listen),
                              metrics=main.metrics)
    if not raw.get("agi", {}).get("spool"):
        spool = os.path.join(os.path.dirname(main.agi.spool), "tenant-%s-%s" % (name, config_mod.SPOOL_NAME))
        cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, spool=spool))
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return Tenant(name, cfg, digest)


def _check_apart(tenants):
    seen = {}
    for tenant in tenants.values():
        cfg = tenant.config
        claims = [("spool", cfg.agi.spool)] + [("context", c) for c in cfg.tenant.contexts] + \
            [("did", d) for d in cfg.tenant.dids]
        for claim in claims:
            if claim in seen:
                raise ConfigError("tenants %s and %s both claim the %s %s" % (seen[claim], tenant.name, *claim))
            seen[claim] = tenant.name
