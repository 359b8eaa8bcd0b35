"""Which tenant an AGI request belongs to (pure).

In order: the path (``agi://host:4573/NAME/incoming``), then the ``agi_context`` a
tenant claims (``[tenant] contexts``), then the DID of an inbound request (``[tenant]
dids``: ``agi_arg_1`` as crmagi's include passes it, else ``agi_dnid``, else
``agi_extension``).  Nothing matching is an error answered at once, never a guess.
"""
from typing import Dict, NamedTuple, Optional


class Claims(NamedTuple):
    contexts: Dict[str, str]     # agi_context -> tenant
    dids: Dict[str, str]         # DID -> tenant


class Picked(NamedTuple):
    tenant: Optional[str]
    script: str
    why: str


def claims_of(tenants) -> Claims:
    contexts, dids = {}, {}
    for name, tenant in tenants.items():
        contexts.update((context, name) for context in tenant.config.tenant.contexts)
        dids.update((did, name) for did in tenant.config.tenant.dids)
    return Claims(contexts, dids)


def pick(env, names, claims: Claims) -> Picked:
    """``env``: the AGI environment (agi.fastagi.protocol.AgiEnv); ``names``: the tenants served."""
    script = env.script
    first, sep, rest = script.partition("/")
    if sep:
        if first in names:
            return Picked(first, rest, "path")
        return Picked(None, rest, "no tenant %r (path %s)" % (first, script))
    context = env.get("context", "")
    if context in claims.contexts:
        return Picked(claims.contexts[context], script, "context %s" % context)
    did = env.arg(1) or env.get("dnid") or env.get("extension", "")
    if script == "incoming" and did in claims.dids:
        return Picked(claims.dids[did], script, "DID %s" % did)
    return Picked(None, script, "no tenant in the path, none claims context %r or DID %r" % (context, did))
