"""Tier c: the `crmagi` commands admins run, against the real SuiteCRM schema in MariaDB."""
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from agi.cli import main

PATSY = "13ca4a4c-562d-57d3-c959-6b082d7b086f"   # sample contact, phone_work (033) 097-7089, chris


def ini(tmp_path, url, extra=""):
    """A config whose spool is beside it (not the machine's /var/lib/crmagi)."""
    path = tmp_path / "crmagi.ini"
    agi = "[agi]\nspool = spool.sqlite\n"
    if "spool =" not in extra:
        extra = extra.replace("[agi]\n", agi) if "[agi]\n" in extra else agi + extra
    path.write_text("[crm]\nurl = %s\n%s" % (url, extra))
    return str(path)


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_check_fix_creates_what_crmagi_owns(crm_url_module, tmp_path):
    path = ini(tmp_path, crm_url_module)
    first = run("check", "-c", path)
    assert first.exit_code == 1
    assert "[lookup] anonymous_account: accounts.id 'crmagi-virtual-account' not found" in first.output
    fixed = run("check", "-c", path, "--fix")
    assert fixed.exit_code == 0, fixed.output
    assert "virtual account crmagi-virtual-account: created" in fixed.output
    again = run("check", "-c", path)
    assert again.exit_code == 0 and again.output.rstrip().endswith("OK")
    engine = create_engine(crm_url_module)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM crmagi_calls")).scalar() == 0
        assert conn.execute(text("SELECT deleted FROM accounts WHERE id='crmagi-virtual-account'")).scalar() == 0
    engine.dispose()


def test_check_names_missing_columns(crm_url_module, tmp_path):
    path = ini(tmp_path, crm_url_module,
               "[users]\nextension_field = asterisk_ext_c\n[lookup]\nmodules = Contacts, Vendors\n"
               "[module:Vendors]\ntable = vendors\nphone_fields = phone\n")
    result = run("check", "-c", path)
    assert result.exit_code == 1
    assert "users_cstm" in result.output and "asterisk_ext_c" in result.output
    assert "vendors" in result.output


def test_check_unreachable_database_names_the_key(tmp_path):
    result = run("check", "-c", ini(tmp_path, "mysql+pymysql://root@127.0.0.1:1/suitecrm"))
    assert result.exit_code == 1 and "ERROR [crm] url: cannot connect" in result.output


def test_check_bad_config_value(tmp_path):
    result = CliRunner().invoke(main, ["check", "-c", ini(tmp_path, "x", "[agi]\ntimeout = soon\n")])
    assert result.exit_code == 1 and "config [agi] timeout: 'soon' is not a number" in result.output


def test_lookup_found_and_unknown(crm_url_module, tmp_path):
    path = ini(tmp_path, crm_url_module)
    found = run("lookup", "-c", path, "033-097-7089")
    assert found.exit_code == 0, found.output
    assert "module:    Contacts" in found.output and PATSY in found.output
    assert "Patsy Beauchesne" in found.output and "seed_chris_id" in found.output
    unknown = run("lookup", "-c", path, "+1 212 555 0199")
    assert unknown.exit_code == 1 and "unknown" in unknown.output


def test_serve_without_url_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.ini"
    path.write_text("[agi]\nlisten = 127.0.0.1:0\n")
    result = CliRunner().invoke(main, ["serve", "-c", str(path)])
    assert result.exit_code == 1 and "config [crm] url: required" in result.output


def test_check_with_popups_names_the_acl_tables_they_need(crm_url, tmp_path):
    path = tmp_path / "crmagi.ini"
    path.write_text("[crm]\nurl = %s\nsite_url = https://crm.example.com/\n[agi]\nspool = spool.sqlite\n"
                    "[webpush]\nsecret = 0123456789abcdef0123456789abcdef\n" % crm_url)
    engine = create_engine(crm_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE acl_roles_users"))
        conn.execute(text("ALTER TABLE acl_actions DROP COLUMN aclaccess"))
    engine.dispose()
    result = run("check", "-c", str(path))
    assert result.exit_code == 1
    assert "acl_roles_users: table not found" in result.output and "acl_actions.aclaccess" in result.output


def _max_connections(url):
    engine = create_engine(url)
    with engine.connect() as conn:
        limit = int(conn.exec_driver_sql("SELECT @@max_connections").scalar())
    engine.dispose()
    return limit


def test_check_warns_when_the_pools_can_outgrow_max_connections(crm_url_module, tmp_path):
    """With 2 workers the default pool_size (20) could open 162 connections: more than MariaDB's
    default 151, and the benchmark's lookups failed with 1040 'Too many connections' past 250
    calls/s.  check says so, naming the key and a pool_size that fits."""
    from agi.config import load
    from agi.ops.checks import connection_budget, connection_warning

    limit = _max_connections(crm_url_module)
    size = limit // 8 + 1                      # 2 workers x (4 x size + 1) > limit
    path = ini(tmp_path, "%s\npool_size = %d" % (crm_url_module, size), "[agi]\nworkers = 2\n")
    assert connection_budget(load(path)) > limit
    result = run("check", "-c", path, "--fix")
    assert "WARNING [crm] pool_size: 2 worker(s) x (4 x pool_size %d + 1)" % size in result.output, result.output
    assert "lower [crm] pool_size to at most %d" % ((limit - 2) // 8) in result.output
    fits = ini(tmp_path, "%s\npool_size = %d" % (crm_url_module, (limit - 2) // 8), "[agi]\nworkers = 2\n")
    engine = create_engine(crm_url_module)
    assert connection_warning(load(fits), engine) is None
    engine.dispose()
    assert "WARNING [crm] pool_size" not in run("check", "-c", fits).output
