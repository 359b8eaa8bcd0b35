"""Render the extensions.conf include shipped in extensions/ (checked against a golden file)."""
from importlib import resources

from jinja2 import Environment, StrictUndefined

from agi.fastagi import ended

TEMPLATE = "extensions_crmagi.conf.j2"


def render(config, tenant="") -> str:
    """``tenant``: the include of one tenant of a shared crmagi: its AGI URLs start with
    /NAME/, its contexts end in -NAME (several tenants' includes fit one Asterisk) and its
    AstDB family is its own."""
    text = resources.files("agi.extensions").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    host, port = config.agi.listen
    if config.dialplan.agi_host:
        host = config.dialplan.agi_host
    elif host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    dp = config.dialplan
    return env.from_string(text).render(
        host=host, port=port, owner_dial=dp.owner_dial, owner_timeout=dp.owner_timeout,
        record=dp.record, record_prefix=dp.record_prefix, source=config.source or "",
        ended_family=ended.family_of(tenant), ended_value=ended.dialplan_value(),
        prefix=tenant + "/" if tenant else "", suffix="-" + tenant if tenant else "")
