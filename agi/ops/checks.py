"""`crmagi check`: the config and the CRM database, every problem named by key or table.column."""
from sqlalchemy import text

from crmsync import dialect as dialects
from crmsync.access import REQUIRED_COLUMNS
from crmsync.accounts import ensure_virtual_account, virtual_account_exists
from crmsync.calls import CallStore
from crmsync.db import CALL_COLUMNS, Schema
from crmsync.directory import Directory

from agi.app import build_engine, lookup_rules
from agi.errors import ConfigError


def _link_columns(config):
    wanted = dict(CALL_COLUMNS)
    for spec in config.modules:
        if spec.link_table:
            wanted[spec.link_table] = ("id", "call_id", spec.link_column, "accept_status", "deleted")
    return wanted


def webpush_problems(config):
    """Popups: settings that would make every browser be refused (only when popups are on)."""
    web = config.webpush
    if not web.secret:
        return []
    from agi.push import allowed_origins

    problems = []
    if len(web.secret) < 16:
        problems.append("[webpush] secret: shorter than 16 characters; every token is signed with it "
                        "(make one with `openssl rand -hex 32`)")
    if not allowed_origins(config):
        problems.append("[webpush] allowed_origins: empty and [crm] site_url has no origin, so every "
                        "browser would be refused; set one of them (e.g. https://crm.example.com)")
    if not web.public_url and web.listen[0] in ("0.0.0.0", "::"):
        problems.append("[webpush] public_url: required when listen is %s (browsers need a host name)"
                        % web.listen[0])
    return problems


def connection_budget(config) -> int:
    """Connections crmagi may hold at once: per worker, the write and the lookup pools
    (pool_size each, and as many again in overflow under a burst) and the health probe's one."""
    return config.agi.workers * (4 * config.crm.pool_size + 1)


def connection_warning(config, engine):
    """A warning naming [crm] pool_size when a burst could open more connections than the
    database allows (MariaDB/MySQL's max_connections, 151 by default); else None.  Past that
    limit lookups and writes fail with 'Too many connections' (1040): seen in the benchmark
    with 2 workers and the default pool_size past 250 calls/s."""
    if dialects.of(engine).name != "mysql":
        return None
    with engine.connect() as conn:
        limit = int(conn.exec_driver_sql("SELECT @@max_connections").scalar())
    need = connection_budget(config)
    if need <= limit:
        return None
    workers = config.agi.workers
    return ("[crm] pool_size: %d worker(s) x (4 x pool_size %d + 1) = up to %d connections under a burst, above "
            "the database's max_connections %d (SuiteCRM needs some too); lower [crm] pool_size to at most %d "
            "or raise max_connections" % (workers, config.crm.pool_size, need, limit,
                                          max(1, (limit - workers) // (4 * workers))))


def run_checks(config, fix=False, echo=print):
    """Return a list of problems (empty: all good); with ``fix`` create what crmagi owns."""
    config_problems = webpush_problems(config)
    if config_problems:
        return config_problems
    try:
        engine = build_engine(config)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except ConfigError as exc:
        return [str(exc)]
    except Exception as exc:
        return ["[crm] url: cannot connect to the CRM database: %s" % str(exc).splitlines()[0]]
    try:
        problems = Directory(engine, lookup_rules(config)).problems()
        wanted = _link_columns(config)
        problems += Schema(engine, list(wanted), wanted).problems()
        if config.webpush.secret:       # popups show a record only to users SuiteCRM lets view it
            problems += Schema(engine, list(REQUIRED_COLUMNS), REQUIRED_COLUMNS).problems()
        if problems:
            return problems
        warning = connection_warning(config, engine)
        if warning:
            echo("WARNING " + warning)
        return _owned(engine, config, fix, echo)
    finally:
        engine.dispose()


def _owned(engine, config, fix, echo):
    problems = []
    account = config.lookup.anonymous_account
    if fix:
        CallStore(engine, system_user=config.crm.system_user).ensure_tables()
        echo("crmagi tables: ready")
        if account and ensure_virtual_account(engine, account, config.crm.system_user):
            echo("virtual account %s: created" % account)
    if account and not virtual_account_exists(engine, account):
        problems.append("[lookup] anonymous_account: accounts.id %r not found (run `crmagi check --fix` "
                        "to create it)" % account)
    return problems
