"""[webpush] settings: what browsers are allowed, and what `crmagi check` refuses."""
from click.testing import CliRunner

from agi import push
from agi.ops.checks import webpush_problems
from agi.cli import main
from agi.config import load


def config(**web):
    crm = {"site_url": web.pop("site_url", "")}
    return load(None, environ={}, overrides={"webpush": web, "crm": crm})


def test_allowed_origins_default_to_the_origin_of_the_site_url():
    assert push.allowed_origins(config(secret="x" * 32, site_url="https://crm.example.com/suitecrm/")) == \
        ("https://crm.example.com",)
    assert push.allowed_origins(config(secret="x" * 32, allowed_origins="http://a:8080, http://b")) == \
        ("http://a:8080", "http://b")
    assert push.allowed_origins(config(secret="x" * 32)) == ()


def test_public_url_defaults_to_the_listen_address():
    assert push.public_url(config(listen="127.0.0.1:9000")) == "ws://127.0.0.1:9000/ws"
    assert push.public_url(config(public_url="wss://crm.example.com/crmagi/ws")) == "wss://crm.example.com/crmagi/ws"


def test_check_names_the_key_that_would_refuse_every_browser():
    assert webpush_problems(config()) == []                        # popups off: nothing to say
    problems = webpush_problems(config(secret="short", listen="0.0.0.0:8089"))
    assert [p.split(":")[0] for p in problems] == ["[webpush] secret", "[webpush] allowed_origins",
                                                   "[webpush] public_url"]
    assert webpush_problems(config(secret="x" * 32, site_url="https://crm.example.com")) == []


def test_workers_need_redis_for_popups(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[crm]\nurl = sqlite:///%s\n[agi]\nworkers = 2\n[webpush]\nsecret = %s\n" % (tmp_path / "x.db", "x" * 32))
    result = CliRunner().invoke(main, ["serve", "-c", str(ini)])
    assert result.exit_code != 0 and "[webpush] redis_url: required with [agi] workers > 1" in result.output
