"""Tier a: the typed config — defaults, precedence, and errors that name the key."""
import pytest

from agi import config
from agi.config import load
from agi.errors import ConfigError
from conftest import REPO


def write(tmp_path, text):
    path = tmp_path / "crmagi.ini"
    path.write_text(text)
    return str(path)


def test_only_url_gives_a_working_stock_suitecrm_config(tmp_path):
    cfg = load(write(tmp_path, "[crm]\nurl = mysql+pymysql://u:p@db/suitecrm\n"), environ={})
    assert [m.name for m in cfg.modules] == ["Contacts", "Accounts", "Leads"]
    assert cfg.module("Contacts").link_table == "calls_contacts"
    assert cfg.module("Leads").link_column == "lead_id"
    assert cfg.module("Accounts").link_table == ""
    assert cfg.module("Accounts").phone_fields == ("phone_office", "phone_alternate")
    assert cfg.agi.listen == ("127.0.0.1", 4573) and cfg.agi.timeout == 0.5
    assert cfg.agi.spool == "/var/lib/crmagi/crmagi-spool.sqlite"      # survives a reboot, unlike /tmp


def test_spool_location(tmp_path):
    path = write(tmp_path, "[agi]\nspool = spool/calls.sqlite\n")
    assert load(path, environ={}).agi.spool == str(tmp_path / "spool" / "calls.sqlite")  # beside the config
    systemd = {"STATE_DIRECTORY": "/var/lib/crmagi-a:/var/lib/other"}
    assert load(None, environ=systemd).agi.spool == "/var/lib/crmagi-a/crmagi-spool.sqlite"
    assert load(None, environ={"CRMAGI_AGI_SPOOL": "/srv/s.sqlite"}).agi.spool == "/srv/s.sqlite"


@pytest.mark.parametrize("text, message", [
    ("[agi]\ntimeout = abc\n", "config [agi] timeout: 'abc' is not a number"),
    ("[agi]\nmax_sessions = many\n", "config [agi] max_sessions: 'many' is not an integer"),
    ("[agi]\nlisten = nowhere\n", "config [agi] listen: 'nowhere' is not host:port"),
    ("[agi]\ntimeot = 1\n", "config [agi] timeot: unknown key"),
    ("[lookup]\ndefault_region = XX\n", "config [lookup] default_region: 'XX' is not a region code"),
    ("[lokup]\nmodules = Contacts\n", "config [lokup]: unknown section"),
    ("[lookup]\nmodules = Contacts, Cases\n", "config [module:Cases] table: required"),
    ("[module:Prospects]\ntable = prospects\n", "config [module:Prospects]: module is not listed"),
    ("[agi]\nset_callerid_name = perhaps\n", "config [agi] set_callerid_name: 'perhaps' is not yes/no"),
])
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), environ={})
    assert str(err.value).startswith(message)


def test_precedence_defaults_ini_env_overrides(tmp_path):
    path = write(tmp_path, "[agi]\ntimeout = 0.3\nreply_timeout = 3\n[lookup]\ndefault_region = ru\n")
    environ = {"CRMAGI_AGI_TIMEOUT": "0.4", "CRMAGI_LOOKUP_SUFFIX_DIGITS": "8"}
    cfg = load(path, environ=environ, overrides={"agi": {"timeout": "0.2"}})
    assert cfg.agi.timeout == 0.2 and cfg.agi.reply_timeout == 3.0
    assert cfg.lookup.default_region == "RU" and cfg.lookup.suffix_digits == 8
    assert load(path, environ=environ).agi.timeout == 0.4


def test_custom_module_with_table(tmp_path):
    cfg = load(write(tmp_path, "[lookup]\nmodules = Contacts, Prospects, Vendors\n"
                     "[module:Vendors]\ntable = vendors\nphone_fields = phone, fax\nname_fields = name\n"),
               environ={})
    vendors = cfg.module("Vendors")
    assert (vendors.table, vendors.phone_fields, vendors.name_fields) == ("vendors", ("phone", "fax"), ("name",))
    assert cfg.module("Prospects").table == "prospects"


def test_describe_masks_the_password(tmp_path):
    cfg = load(write(tmp_path, "[crm]\nurl = mysql+pymysql://crm:s3cret@db/suitecrm\n"), environ={})
    text = "\n".join(config.describe(cfg))
    assert "s3cret" not in text and "crm:***@db/suitecrm" in text


def test_readme_config_reference_is_current():
    readme = (REPO / "README.rst").read_text()
    assert config.reference_rst() in readme, "regenerate with: python -m agi.config"


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    """Found by bench/fuzz.py: UnicodeDecodeError escaped load()."""
    path = tmp_path / "crmagi.ini"
    path.write_bytes(b"[agi]\ntimeout = 0.5 \xb2\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(str(path), environ={})
