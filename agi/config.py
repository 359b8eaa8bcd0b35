"""One typed, frozen configuration object, validated at start-up.

Each section is a frozen dataclass whose fields carry their converter and help
text; the INI file, then ``CRMAGI_<SECTION>_<KEY>`` environment variables,
then CLI overrides are applied on top of the defaults.  Every error names the
section and key, e.g. ``config [agi] timeout: 'abc' is not a number``.
"""
import configparser
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from agi.ops import redact
from agi.errors import ConfigError

# Modules SuiteCRM ships with phone columns; a custom module names its table.
KNOWN_MODULES = {
    "Contacts": ("contacts", "phone_work, phone_mobile, phone_home, phone_other, assistant_phone"),
    "Leads": ("leads", "phone_work, phone_mobile, phone_home, phone_other, assistant_phone"),
    "Prospects": ("prospects", "phone_work, phone_mobile, phone_home, phone_other, assistant_phone"),
    "Accounts": ("accounts", "phone_office, phone_alternate"),
}


def _str(value):
    return value.strip()


def _int(value):
    try:
        return int(value)
    except ValueError:
        raise ValueError("%r is not an integer" % value) from None


def _count(value):
    result = _int(value)
    if result < 1:
        raise ValueError("%r must be at least 1" % value)
    return result


def _nonnegative(value):
    result = _int(value)
    if result < 0:
        raise ValueError("%r must be 0 or more" % value)
    return result


def _float(value):
    try:
        result = float(value)
    except ValueError:
        raise ValueError("%r is not a number" % value) from None
    if result <= 0:
        raise ValueError("%r must be greater than 0" % value)
    return result


def _bool(value):
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("%r is not yes/no" % value)


def _list(value):
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _hostport(value):
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("%r is not host:port" % value)
    return (host.strip("[]") or "0.0.0.0", int(port))


def _region(value):
    import phonenumbers

    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("%r is not a region code such as RU, DE or US" % value)
    return region


def _dial_template(value):
    """An originate channel such as PJSIP/{exten}: a technology, a resource, and {exten}."""
    text = value.strip()
    if "{exten}" not in text or "/" not in text.split("{exten}")[0]:
        raise ValueError("%r must look like PJSIP/{exten} (a technology, then {exten})" % value)
    try:
        text.format(exten="101")
    except (KeyError, IndexError, ValueError):
        raise ValueError("%r: only {exten} may appear in braces" % value) from None
    return text


def _pattern(value):
    try:
        re.compile(value.strip())
    except re.error as exc:
        raise ValueError("%r is not a regular expression (%s)" % (value, exc)) from None
    return value.strip()


def _context(value):
    text = value.strip()
    if not text or any(c in text for c in ",|()\r\n\t "):
        raise ValueError("%r is not a dialplan context name" % value)
    return text


class PlainError(ValueError):
    """A converter's error whose message does not quote the value: shown even for a secret."""


# SQLAlchemy backends crmagi speaks (crmsync/dialect/).
_DATABASES = ("mysql", "mariadb", "mssql", "sqlite")


def _crm_url(value):
    """A database URL crmagi can use; the SQL Server driver is an extra (crmagi[mssql])."""
    value = value.strip()
    if "://" not in value:
        return value        # not a URL: the engine's own error names it when crmagi connects
    backend, _, driver = value.partition("://")[0].lower().partition("+")
    if backend not in _DATABASES:
        raise PlainError("%s databases are not supported (mysql+pymysql://, mssql+pymssql:// or sqlite:///)"
                         % backend)
    if backend in ("mysql", "mariadb") and driver != "pymysql":
        # The hot path speaks PyMySQL itself (its escaping, multi-statement packets: crmsync/dialect).
        raise PlainError("MariaDB/MySQL is reached through PyMySQL: write %s+pymysql://user:pass@host/db" % backend)
    if backend == "mssql":
        if driver != "pymssql":
            raise PlainError("SQL Server is reached through pymssql: write mssql+pymssql://user:pass@host/db")
        import importlib.util
        if importlib.util.find_spec("pymssql") is None:
            raise PlainError("mssql+pymssql needs the mssql extra, which is not installed: "
                             "pip install 'crmagi[mssql]'")
    return value


def _language(value):
    """A SuiteCRM language code such as en_us, ru_RU, de_DE."""
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z]{2,3}(_[A-Za-z0-9]{2,4})?", text):
        raise ValueError("%r is not a SuiteCRM language code such as en_us, ru_RU or de_DE" % value)
    return text


def _date_format(value):
    from crmlocale.dates import check_format

    return check_format(value.strip())


def _timezone(value):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    text = value.strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("%r is not a time zone name such as UTC or Europe/Berlin" % value) from None
    return text


def setting(default, conv, help, secret=None):
    """``secret``: "value" (the whole value is secret) or "url" (the password in the URL);
    such values are masked wherever crmagi shows or logs them (agi/ops/redact.py)."""
    return field(default=default, metadata={"conv": conv, "help": help, "secret": secret})


# A config without [tenants] is one tenant of this name (plugin API keys, welcome message).
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class CrmSettings:
    url: str = setting("", _crm_url, "SQLAlchemy URL of the SuiteCRM database, e.g. mysql+pymysql://u:p@127.0.0.1/suitecrm "
                       "(SQL Server: mssql+pymssql://u:p@host:1433/sugarcrm with crmagi[mssql])",
                       secret="url")
    pool_size: int = setting(20, _int, "database connections kept open")
    connect_timeout: float = setting(3.0, _float, "seconds to wait for a database connection")
    query_timeout: float = setting(5.0, _float, "seconds a database read or write may take before it is abandoned")
    write_lanes: int = setting(2, _nonnegative, "Call writes in flight at once per process (MariaDB/MySQL): writes "
                               "that queue meanwhile share the next transaction; 0: each write its own, at once")
    system_user: str = setting("1", _str, "users.id written as created_by/modified_user_id of Call records")
    site_url: str = setting("", _str, "SuiteCRM base URL, used in links (e.g. https://crm.example.com/)")
    acl_additive: bool = setting(True, _bool, "SuiteCRM's securitysuite_additive: of several roles the most "
                                 "permissive wins (off: the least)")
    acl_user_role_precedence: bool = setting(True, _bool, "SuiteCRM's securitysuite_user_role_precedence: a "
                                             "user's own roles override those of their security groups")
    missed_calls: bool = setting(True, _bool, "missed inbound calls notify their responsible user (else the users of "
                                 "[webpush] fallback_extensions) in SuiteCRM's bell and crmagi's missed-calls list")
    # What SuiteCRM's config.php gives users who set nothing themselves (crmagi reads the rest of
    # each user's language, formats and zone from SuiteCRM's user_preferences).
    default_language: str = setting("en_us", _language, "config.php default_language: Call subjects, and "
                                    "popups of users without a language preference")
    date_format: str = setting("m/d/Y", _date_format, "config.php datef: PHP date letters for users without one")
    time_format: str = setting("H:i", _date_format, "config.php timef: PHP time letters for users without one")
    timezone: str = setting("UTC", _timezone, "time zone of users without one (SuiteCRM's default: UTC)")


@dataclass(frozen=True)
class AgiSettings:
    listen: Tuple[str, int] = setting(("127.0.0.1", 4573), _hostport, "FastAGI address host:port")
    timeout: float = setting(0.5, _float, "seconds: a request always answers within this, with what it has")
    reply_timeout: float = setting(2.0, _float, "seconds to wait for Asterisk's reply to one command")
    max_sessions: int = setting(500, _int, "concurrent FastAGI sessions per worker; more wait in the accept queue")
    workers: int = setting(1, _int, "worker processes, one per core, sharing one socket the parent binds: "
                                    "a free worker takes the next call. The parent restarts a worker that dies "
                                    "(calls wait in the queue meanwhile); a worker whose parent dies (even by SIGKILL) "
                                    "drains and exits within a second")
    set_callerid_name: bool = setting(True, _bool, "set CALLERID(name) to the record's name when found")
    log_internal: bool = setting(False, _bool, "also log calls between internal extensions")
    spool: str = setting("", _str, "local file keeping writes the CRM database could not take yet; empty: "
                         "crmagi-spool.sqlite in $STATE_DIRECTORY (systemd) or /var/lib/crmagi/; a relative "
                         "path is relative to the config file")
    flush_interval: float = setting(5.0, _float, "seconds between retries of the spool")
    spool_max_mb: float = setting(256.0, _float, "spool size (MB) past which crmagi logs an error each minute "
                                  "and /healthz fails; nothing is ever dropped")
    spool_max_attempts: int = setting(8, _int, "failed replays (while the CRM answers) before an op moves to "
                                      "the dead letters (`crmagi spool list`); backs off from flush_interval")
    system_name: str = setting("", _str, "name of this Asterisk, part of call ids when several share one CRM")


@dataclass(frozen=True)
class LookupSettings:
    modules: Tuple[str, ...] = setting(("Contacts", "Accounts", "Leads"), _list, "modules searched, in this order")
    default_region: str = setting("US", _region, "region for numbers without a country code (ISO code)")
    anonymous_account: str = setting("crmagi-virtual-account", _str, "accounts.id of the virtual account for unidentified callers")
    internal_max_digits: int = setting(5, _int, "numbers this short are internal extensions, never customers")
    suffix_digits: int = setting(7, _int, "fewest trailing digits that may match a number stored without prefix")


@dataclass(frozen=True)
class UsersSettings:
    extension_field: str = setting("phone_work", _str, "users column (or users_cstm column, e.g. asterisk_ext_c) with the extension")


@dataclass(frozen=True)
class AmiSettings:
    host: str = setting("", _str, "Asterisk Manager host; empty: no AMI listener (AGI only)")
    port: int = setting(5038, _int, "Asterisk Manager port")
    username: str = setting("", _str, "manager.conf user (read = call,agent,dialplan,system; write = originate)")
    secret: str = setting("", _str, "its secret", secret="value")
    ping_interval: float = setting(20.0, _float, "seconds between keepalive Pings")
    timeout: float = setting(5.0, _float, "seconds to wait for a connect or an action's response")
    inbound_contexts: Tuple[str, ...] = setting(("from-pstn", "from-trunk", "from-external"), _list,
                                                "dialplan contexts where calls from outside arrive")
    outbound_contexts: Tuple[str, ...] = setting(("from-internal",), _list, "contexts where phones place outside calls")
    ignore_contexts: Tuple[str, ...] = setting((), _list, "contexts whose calls are not followed at all")
    call_ttl: float = setting(14400.0, _float, "seconds after which a call AMI never ended is dropped from memory")
    transfer_context: str = setting("from-internal", _str, "context where click-to-transfer sends the caller (Redirect)")
    originate_channel: str = setting("PJSIP/{exten}", _dial_template, "click-to-call: the channel that rings the "
                                     "user's own phone first; {exten} is the user's extension ([users] extension_field)")
    originate_context: str = setting("from-internal", _context, "click-to-call: context where the number is dialled "
                                     "once the user answered (the normal outbound dialplan)")
    originate_pattern: str = setting(r"\+?[0-9]{3,20}", _pattern, "click-to-call: regex a number (reduced to digits, "
                                     "a leading + kept) must match in full, or the click is refused")
    originate_timeout: int = setting(30, _count, "click-to-call: seconds the user's phone rings before it gives up")
    originate_per_minute: int = setting(6, _count, "click-to-call: calls a user may start per minute")
    agent_context: str = setting("agent-request", _context, "context where EXTEN = an app_agent_pool agent id runs "
                                 "AgentRequest(${EXTEN}): how a logged-in agent is rung (click-to-call, transfer)")


@dataclass(frozen=True)
class DidSettings:
    number: str = setting("", _str, "the DID (section suffix)")
    campaign: str = setting("", _str, "campaigns.id to record on calls to this number")
    lead_source: str = setting("", _str, "lead source to record (SuiteCRM lead_source_dom key)")
    group: str = setting("", _str, "responsible group (free text) for calls to this number")


@dataclass(frozen=True)
class DialplanSettings:
    agi_host: str = setting("", _str, "host Asterisk uses to reach crmagi (default: the [agi] listen host)")
    owner_dial: str = setting("PJSIP/${CRM_OWNER_EXTEN}", _str, "Dial() string that rings the responsible user")
    owner_timeout: int = setting(20, _int, "seconds the responsible user's phone rings before the fallback")
    record: bool = setting(True, _bool, "add MixMonitor to logged calls")
    record_prefix: str = setting("", _str, "path prefix of recordings (relative: Asterisk's monitor dir)")


@dataclass(frozen=True)
class WebpushSettings:
    listen: Tuple[str, int] = setting(("127.0.0.1", 8089), _hostport, "popup websocket server address host:port")
    public_url: str = setting("", _str, "websocket URL browsers use (default ws://<listen>/ws; wss:// behind a TLS proxy)")
    secret: str = setting("", _str, "key signing the browsers' tokens; empty: no popups (make one with `openssl rand -hex 32`)",
                          secret="value")
    token_seconds: int = setting(600, _int, "lifetime of a browser token (the push server renews it while connected)")
    pending_seconds: float = setting(40.0, _float, "a CRM tab opened this long after the ring still gets the popup")
    allowed_origins: Tuple[str, ...] = setting((), _list, "origins allowed to connect (default: the origin of [crm] site_url)")
    redis_url: str = setting("", _str, "redis://host:port/db shared by several crmagi boxes; empty: this box only",
                             secret="url")
    history_limit: int = setting(10, _int, "history items shown in a popup")
    max_sockets: int = setting(20000, _int, "browser tabs connected at once (about 20 KB each); more wait")
    fallback_extensions: Tuple[str, ...] = setting((), _list, "without AMI: extensions whose users get the popups of "
                                                   "calls with no responsible user (reception)")
    plugin_api: bool = setting(True, _bool, "serve the plugin API at /plugin (API keys from `crmagi keys create`)")


@dataclass(frozen=True)
class RecordingsSettings:
    local_dir: str = setting("", _str, "folder holding the recordings on this box (Asterisk's monitor folder, or a "
                             "mount of it); MixMonitor's relative names resolve against it")
    remote_url: str = setting("", _str, "http(s) URL where the PBX serves its monitor folder (e.g. nginx); "
                              "crmagi fetches with Range, browsers never reach it. Set this or local_dir",
                              secret="url")
    remote_user: str = setting("", _str, "basic auth user for remote_url")
    remote_password: str = setting("", _str, "basic auth password for remote_url", secret="value")
    monitor_dir: str = setting("", _str, "the PBX folder MixMonitor writes to, which absolute recorded paths must "
                               "lie in (default: local_dir, else /var/spool/asterisk/monitor)")
    cache_dir: str = setting("", _str, "where converted (GSM, WAV49) recordings are kept; empty: recordings-cache "
                             "in $CACHE_DIRECTORY (systemd) or /var/cache/crmagi/")
    cache_mb: float = setting(512.0, _float, "size cap of cache_dir (MB); the least recently played go first")
    url_seconds: int = setting(900, _int, "lifetime of a signed recording URL (the page renews it)")
    fetch_timeout: float = setting(5.0, _float, "seconds to wait for remote_url")


@dataclass(frozen=True)
class MetricsSettings:
    listen: Tuple[str, int] = setting(("127.0.0.1", 9108), _hostport, "address of /metrics (Prometheus) and /healthz, "
                                      "host:port; with [agi] workers > 1 the parent serves all workers")
    probe_interval: float = setting(2.0, _float, "seconds between the background SELECT 1 that /healthz reports")


@dataclass(frozen=True)
class CdrSettings:
    csv: str = setting("", _str, "Asterisk's cdr_csv Master.csv (e.g. /var/log/asterisk/cdr-csv/Master.csv; default "
                       "columns with loguniqueid, or newcdrcolumns), read by `crmagi backfill`; a relative path is "
                       "relative to the config file")
    url: str = setting("", _str, "instead of csv: SQLAlchemy URL of the database Asterisk writes CDRs to "
                       "(cdr_adaptive_odbc, cdr_mysql)", secret="url")
    table: str = setting("cdr", _str, "the CDR table in that database")
    timezone: str = setting("UTC", _timezone, "zone of the CDR's times: UTC with cdr.conf [csv] usegmtime = yes, "
                            "else the Asterisk box's zone (e.g. Europe/Berlin)")
    backfill_on_start: bool = setting(True, _bool, "when csv or url is set: on start, backfill the calls since "
                                      "the last call crmagi logged")


@dataclass(frozen=True)
class TenantsSettings:
    dir: str = setting("", _str, "folder of NAME.ini files, one crmagi config per tenant (main file only); empty: "
                       "this config is the one tenant")


@dataclass(frozen=True)
class TenantSettings:
    contexts: Tuple[str, ...] = setting((), _list, "in a tenant's file: agi_context values whose AGI requests are this "
                                        "tenant's (a shared Asterisk), besides agi://host/NAME/...")
    dids: Tuple[str, ...] = setting((), _list, "in a tenant's file: DIDs whose inbound AGI requests are this tenant's")


@dataclass(frozen=True)
class ModuleSettings:
    name: str = setting("", _str, "module name as SuiteCRM spells it (section suffix)")
    table: str = setting("", _str, "table of the module (known for Contacts, Accounts, Leads, Prospects)")
    phone_fields: Tuple[str, ...] = setting((), _list, "phone columns searched, in this order")
    name_fields: Tuple[str, ...] = setting((), _list, "columns joined into the display name (default: first_name, last_name or name)")
    link_table: str = setting("", _str, "join table linking calls (calls_contacts for Contacts, calls_leads for Leads)")
    link_column: str = setting("", _str, "column of link_table holding the record id")


@dataclass(frozen=True)
class Config:
    crm: CrmSettings = CrmSettings()
    agi: AgiSettings = AgiSettings()
    lookup: LookupSettings = LookupSettings()
    users: UsersSettings = UsersSettings()
    dialplan: DialplanSettings = DialplanSettings()
    ami: AmiSettings = AmiSettings()
    webpush: WebpushSettings = WebpushSettings()
    recordings: RecordingsSettings = RecordingsSettings()
    metrics: MetricsSettings = MetricsSettings()
    cdr: CdrSettings = CdrSettings()
    tenants: TenantsSettings = TenantsSettings()
    tenant: TenantSettings = TenantSettings()
    modules: Tuple[ModuleSettings, ...] = ()
    dids: Tuple[DidSettings, ...] = ()
    source: Optional[str] = None

    def module(self, name):
        for spec in self.modules:
            if spec.name == name:
                return spec
        raise KeyError(name)


SECTIONS = {"crm": CrmSettings, "agi": AgiSettings, "lookup": LookupSettings, "users": UsersSettings,
            "dialplan": DialplanSettings, "ami": AmiSettings,
            "webpush": WebpushSettings, "recordings": RecordingsSettings, "metrics": MetricsSettings,
            "cdr": CdrSettings, "tenants": TenantsSettings, "tenant": TenantSettings}


def _build(section, cls, values, base=None):
    """Build one section dataclass from raw strings, naming the key on error."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError("config [%s] %s: unknown key (known: %s)" % (section, key, ", ".join(sorted(known))))
        try:
            kwargs[key] = known[key].metadata["conv"](raw)
        except ValueError as exc:
            if known[key].metadata.get("secret") and not isinstance(exc, PlainError):   # it quotes the value
                exc = "invalid value (not shown: it holds a secret)"
            raise ConfigError("config [%s] %s: %s" % (section, key, exc)) from None
    return dataclasses.replace(base or cls(), **kwargs)


def _env_values(environ, section, cls):
    prefix = "CRMAGI_%s_" % section.upper()
    names = {f.name for f in dataclasses.fields(cls)}
    return {key[len(prefix):].lower(): value for key, value in environ.items()
            if key.startswith(prefix) and key[len(prefix):].lower() in names}


def _module(name, values):
    table, phones = KNOWN_MODULES.get(name, ("", ""))
    defaults = {"name": name, "table": table, "phone_fields": phones}
    defaults.update(values)
    spec = _build("module:" + name, ModuleSettings, defaults)
    if not spec.table:
        raise ConfigError("config [module:%s] table: required for a module SuiteCRM does not ship with phones" % name)
    if not spec.phone_fields:
        raise ConfigError("config [module:%s] phone_fields: at least one column is needed" % name)
    if name == "Contacts" and not spec.link_table:
        spec = dataclasses.replace(spec, link_table="calls_contacts", link_column="contact_id")
    if name == "Leads" and not spec.link_table:
        spec = dataclasses.replace(spec, link_table="calls_leads", link_column="lead_id")
    if bool(spec.link_table) != bool(spec.link_column):
        raise ConfigError("config [module:%s] link_column: link_table and link_column go together" % name)
    return spec


def _read_ini(path):
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError("config %s: cannot read (%s)" % (path, exc.strerror)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("config %s: not UTF-8 (byte %d)" % (path, exc.start)) from None
    except configparser.Error as exc:
        raise ConfigError("config %s: %s" % (path, exc.message.splitlines()[0])) from None
    return {name: dict(parser.items(name)) for name in parser.sections()}


def load(path=None, environ: Mapping[str, str] = None,
         overrides: Dict[str, Dict[str, str]] = None) -> Config:
    """Defaults < INI file < CRMAGI_<SECTION>_<KEY> environment < overrides."""
    raw = _read_ini(path) if path else {}
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    for name in raw:
        if name not in SECTIONS and not name.startswith(("module:", "did:")):
            raise ConfigError("config [%s]: unknown section (known: %s, module:<Name>, did:<Number>)"
                              % (name, ", ".join(SECTIONS)))
    built = {}
    for section, cls in SECTIONS.items():
        obj = _build(section, cls, raw.get(section, {}))
        obj = _build(section, cls, _env_values(environ, section, cls), obj)
        built[section] = _build(section, cls, overrides.get(section, {}), obj)
    built["agi"] = _resolve_spool(built["agi"], path, environ)
    built["recordings"] = _resolve_recordings(built["recordings"], environ)
    built["cdr"] = _resolve_cdr(built["cdr"], path)
    modules = tuple(_module(name, raw.get("module:" + name, {})) for name in built["lookup"].modules)
    for name in raw:
        if name.startswith("module:") and name[7:] not in built["lookup"].modules:
            raise ConfigError("config [%s]: module is not listed in [lookup] modules" % name)
    dids = tuple(_build(name, DidSettings, dict(values, number=name[4:]))
                 for name, values in raw.items() if name.startswith("did:"))
    return Config(modules=modules, dids=dids, source=path, **built)


SPOOL_NAME = "crmagi-spool.sqlite"
STATE_DIR = "/var/lib/crmagi"


def _resolve_spool(agi, path, environ):
    """No spool set: the service's state directory, which survives a reboot (/tmp may not).
    A relative path is relative to the config file, not to the cwd of a service."""
    if not agi.spool:
        state = (environ.get("STATE_DIRECTORY") or "").split(":")[0] or STATE_DIR
        return dataclasses.replace(agi, spool=os.path.join(state, SPOOL_NAME))
    if path and not os.path.isabs(agi.spool):
        return dataclasses.replace(agi, spool=os.path.join(os.path.dirname(os.path.abspath(path)), agi.spool))
    return agi


def _resolve_cdr(cdr, path):
    """One CDR source; a relative csv path is relative to the config file."""
    if cdr.csv and cdr.url:
        raise ConfigError("config [cdr] url: set csv or url, not both")
    if cdr.csv and path and not os.path.isabs(cdr.csv):
        return dataclasses.replace(cdr, csv=os.path.join(os.path.dirname(os.path.abspath(path)), cdr.csv))
    return cdr


CACHE_DIR = "/var/cache/crmagi"
MONITOR_DIR = "/var/spool/asterisk/monitor"


def _resolve_recordings(rec, environ):
    """One store; absolute folders; the cache in the service's cache directory by default."""
    if rec.local_dir and rec.remote_url:
        raise ConfigError("config [recordings] remote_url: set local_dir or remote_url, not both")
    for key in ("local_dir", "monitor_dir", "cache_dir"):
        value = getattr(rec, key)
        if value and not os.path.isabs(value):
            raise ConfigError("config [recordings] %s: %r is not an absolute path" % (key, value))
    if rec.remote_url and not rec.remote_url.lower().startswith(("http://", "https://")):
        raise ConfigError("config [recordings] remote_url: %r is not an http:// or https:// URL" % rec.remote_url)
    if rec.url_seconds < 30:
        raise ConfigError("config [recordings] url_seconds: %d is too short to play a call (at least 30)"
                          % rec.url_seconds)
    monitor = rec.monitor_dir or rec.local_dir or MONITOR_DIR
    cache = rec.cache_dir or os.path.join((environ.get("CACHE_DIRECTORY") or "").split(":")[0] or CACHE_DIR,
                                          "recordings-cache")
    return dataclasses.replace(rec, monitor_dir=monitor, cache_dir=cache)


def require_url(config):
    if not config.crm.url:
        raise ConfigError("config [crm] url: required (an SQLAlchemy URL such as mysql+pymysql://user:pass@host/suitecrm)")
    return config.crm.url


def secret_values(config):
    """The current values of every setting marked secret (URL passwords as written and
    %-decoded): what agi/ops/redact.py masks in logs and output."""
    found = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            kind, value = f.metadata.get("secret"), getattr(getattr(config, section), f.name)
            if kind == "url":
                value = redact.url_password(value)
            if kind and value:
                found.append(value)
    return redact.with_unquoted(found)


def describe(config):
    """Lines of the effective config, secrets masked, for `crmagi check`."""
    lines = []
    for section in SECTIONS:
        lines.append("[%s]" % section)
        for f in dataclasses.fields(SECTIONS[section]):
            lines.append("%s = %s" % (f.name, _show(f, getattr(getattr(config, section), f.name))))
    for spec in config.modules:
        lines.append("[module:%s]" % spec.name)
        for f in dataclasses.fields(ModuleSettings)[1:]:
            lines.append("%s = %s" % (f.name, _show(f, getattr(spec, f.name))))
    return lines


def _show(f, value):
    secret = f.metadata.get("secret")
    if isinstance(value, tuple) and f.name == "listen":
        return "%s:%d" % value
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if secret == "url":
        return redact.mask_url(value)
    if secret:
        return redact.MASK if value else ""
    return str(value)


def reference():
    """(section, key, default, help) rows for the README's config reference."""
    rows = []
    extra = [("module:<Name>", ModuleSettings), ("did:<Number>", DidSettings)]
    for section, cls in list(SECTIONS.items()) + extra:
        for f in dataclasses.fields(cls):
            if f.name in ("name", "number") and ":" in section:
                continue
            rows.append((section, f.name, _show(f, f.default), f.metadata["help"]))
    return rows


def reference_rst():
    """The README's configuration table (tests/test_config.py keeps the README in sync)."""
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 15 20 25 40", "",
             "   * - section", "     - key", "     - default", "     - meaning"]
    for section, key, default, help_text in reference():
        lines += ["   * - ``[%s]``" % section, "     - ``%s``" % key,
                  "     - ``%s``" % default if default else "     -", "     - %s" % help_text]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_rst(), end="")
