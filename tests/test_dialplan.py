"""Tier a: `crmagi dialplan` renders the include exactly as the golden file."""
from pathlib import Path

from click.testing import CliRunner

from agi.cli import main

GOLDEN = Path(__file__).parent / "golden" / "extensions_crmagi.conf"


def test_dialplan_matches_golden(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[agi]\nlisten = 0.0.0.0:4573\n[dialplan]\nagi_host = 10.0.0.5\n"
                   "owner_dial = PJSIP/${CRM_OWNER_EXTEN}\nowner_timeout = 15\n")
    result = CliRunner().invoke(main, ["dialplan", "-c", str(ini)])
    assert result.exit_code == 0, result.output
    text = result.output.replace(str(ini), "crmagi.ini")
    assert text == GOLDEN.read_text()
    assert "AGI(agi://10.0.0.5:4573/incoming,${ARG1})" in text
    assert "Dial(PJSIP/${CRM_OWNER_EXTEN},15,t)" in text


def test_dialplan_without_record_has_no_mixmonitor(tmp_path):
    ini = tmp_path / "crmagi.ini"
    ini.write_text("[dialplan]\nrecord = no\n")
    result = CliRunner().invoke(main, ["dialplan", "-c", str(ini)])
    assert result.exit_code == 0 and "MixMonitor" not in result.output
    assert "AGI(agi://127.0.0.1:4573/hangup)" in result.output
