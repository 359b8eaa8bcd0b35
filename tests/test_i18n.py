"""Tier a: SuiteCRM's PHP-serialized preferences, its PHP date formats, and the catalogues.

The catalogue tests keep the .po files honest: every text marked in the code (Python,
templates, popup.js/recordings.js) is in the template and translated, non-fuzzy, in every
shipped language, with the same placeholders.
"""
import base64
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crmlocale import catalogues, dates, extract
from crmlocale.catalogues import Phrase, phrase
from crmsync import outcome, phpserial
from crmsync.models import CallRecord
from crmsync.userlocale import UserLocale, from_preferences

ROOT = Path(__file__).resolve().parent.parent
# Bytes SuiteCRM 7.14.6 wrote for the demo admin (peer database, user_preferences 'global').
ADMIN_PREFS = (b'a:5:{s:9:"hide_tabs";a:0:{}s:12:"mail_smtpssl";i:0;s:8:"timezone";s:3:"UTC";'
               b's:10:"user_theme";s:6:"SuiteP";s:9:"ContactsQ";a:1:{s:13:"searchFormTab";s:12:"basic_search";}}')


# -- PHP unserialize ----------------------------------------------------------------------------

def test_phpserial_reads_what_suitecrm_writes():
    assert phpserial.loads(ADMIN_PREFS) == {"hide_tabs": {}, "mail_smtpssl": 0, "timezone": "UTC",
                                            "user_theme": "SuiteP", "ContactsQ": {"searchFormTab": "basic_search"}}
    assert phpserial.loads(b'a:4:{i:0;b:1;i:1;N;i:2;d:0.5;i:3;s:4:"\xd0\xaf\xd0\xb9";}') == \
        {0: True, 1: None, 2: 0.5, 3: "Яй"}        # string lengths are bytes, as in PHP


@pytest.mark.parametrize("junk", [
    b'O:8:"stdClass":0:{}',                 # objects are never built
    b'a:1:{i:0;O:8:"stdClass":0:{}}',
    b'C:3:"Foo":0:{}', b'r:1;', b's:10:"short";', b's:-1:"";', b'a:2:{i:0;i:1;}', b'i:1;junk',
    b'a:1:{a:0:{}i:1;}', b'b:2;', b'd:1e;', b"", b"x", b'a:1:{' * 40,
])
def test_phpserial_refuses_what_it_does_not_read(junk):
    with pytest.raises(phpserial.PhpSerialError):
        phpserial.loads(junk)


def test_preferences_fill_in_the_site_defaults():
    site = UserLocale("de_DE", "Y-m-d", "H:i", "Europe/Berlin")
    ru = base64.b64encode(b'a:3:{s:8:"language";s:5:"ru_RU";s:5:"datef";s:5:"d.m.Y";s:8:"timezone";s:0:"";}')
    assert from_preferences(ru, site) == UserLocale("ru_RU", "d.m.Y", "H:i", "Europe/Berlin")
    assert from_preferences(base64.b64encode(ADMIN_PREFS), site) == UserLocale("de_DE", "Y-m-d", "H:i", "UTC")
    for unreadable in (b"%%%not base64", base64.b64encode(b'O:3:"Foo":0:{}'), base64.b64encode(b"s:1:\"x\";")):
        assert from_preferences(unreadable, site) == site


# -- PHP date formats -----------------------------------------------------------------------------

WHEN = datetime(2026, 3, 29, 0, 5, 9, tzinfo=timezone.utc)      # the night Europe/Berlin goes to summer time


@pytest.mark.parametrize("date_format, time_format, zone, shown", [
    ("d.m.Y", "H:i", "Europe/Moscow", "29.03.2026 03:05"),
    ("m/d/Y", "h:ia", "America/New_York", "03/28/2026 08:05pm"),
    ("Y-m-d", "H:i", "UTC", "2026-03-29 00:05"),
    ("d/m/Y", "h:i A", "Europe/Berlin", "29/03/2026 01:05 AM"),
    ("j.n.y", "G.i:s", "Asia/Kolkata", "29.3.26 5.35:09"),
    ("Y.m.d", "g:i a", "Nowhere/Unknown", "2026.03.29 12:05 am"),       # unknown zone: UTC, as SuiteCRM
    ("\\Y Y", "\\H H", "UTC", "Y 2026 H 00"),
])
def test_php_formats_in_the_users_zone(date_format, time_format, zone, shown):
    assert dates.display(WHEN, date_format, time_format, zone) == shown


def test_naive_times_are_utc_and_formats_are_checked():
    assert dates.display(datetime(2026, 7, 1, 12), "d.m.Y", "H:i", "Europe/Berlin") == "01.07.2026 14:00"
    for good in ("d.m.Y", "m/d/Y", "h:iA", "\\T H:i"):
        assert dates.check_format(good) == good
    for bad in ("D, d M Y", "", "  ", "l"):
        with pytest.raises(ValueError):
            dates.check_format(bad)


# -- catalogues -------------------------------------------------------------------------------------

def test_suitecrm_codes_pick_the_catalogue():
    assert catalogues.available() == ("de", "ru")
    assert [catalogues.language(code).code for code in ("ru_RU", "ru_ru", "RU", "de_DE", "de-AT", "en_us", "",
                                                        None, "fr_FR", "../../etc")] == \
        ["ru", "ru", "ru", "de", "de", "en", "en", "en", "en", "en"]
    ru, de, en = (catalogues.language(c) for c in ("ru_RU", "de_DE", "en_us"))
    assert (ru.gettext("Incoming call"), de.gettext("Incoming call"), en.gettext("Incoming call")) == \
        ("Входящий звонок", "Eingehender Anruf", "Incoming call")


def test_phrases_are_translated_when_shown():
    ru = catalogues.language("ru_RU")
    text = phrase("Transferred to %s", phrase("another phone"))
    assert str(text) == "Transferred to another phone"
    assert ru.say(text) == "Переведён на другой телефон"
    assert ru.say(phrase("Transferred to %s", "Will Westin")) == "Переведён на Will Westin"
    assert ru.say("plain text stays") == "plain text stays"
    assert isinstance(text, Phrase) and text == "Transferred to another phone" and catalogues.language("de_DE").say(phrase("your phone is busy")) == \
        "Ihr Telefon ist besetzt"


def test_browser_texts_are_only_the_scripts():
    ru = catalogues.language("ru_RU")
    assert ru.js["Download"] == "Скачать" and ru.js["recording not available"] == "запись недоступна"
    assert "Edit this call" not in ru.js        # rendered on the server
    assert catalogues.language("en_us").js == {}


def _messages(catalog):
    return {m.id: m for m in catalog if m.id}


def test_every_marked_text_is_translated_in_every_language():
    """Fails when code marks a text the catalogues lack: run ``python -m crmlocale.extract`` and translate."""
    from babel.messages.pofile import read_po

    marked = _messages(extract.template(ROOT))
    assert len(marked) > 100
    with (catalogues.LOCALE_DIR / "crmagi.pot").open("rb") as handle:
        assert set(_messages(read_po(handle))) == set(marked), "crmagi.pot is stale: python -m crmlocale.extract"
    for code in catalogues.available():
        with (catalogues.LOCALE_DIR / code / "LC_MESSAGES" / "crmagi.po").open("rb") as handle:
            catalog = read_po(handle, locale=code)
        found = _messages(catalog)
        missing = sorted(set(marked) - {k for k, m in found.items() if m.string and not m.fuzzy})
        assert not missing, "%s lacks translations of %s" % (code, missing)
        errors = [(m.id, [str(e) for e in errs]) for m, errs in catalog.check()]
        assert not errors, errors                 # placeholders match (python-format)
        same = [k for k in marked if found[k].string == k and k not in ("Name", "Meeting")]
        assert not same, "%s: untranslated copies %s" % (code, same)


def test_call_subjects_in_the_site_language_fit_50_characters():
    ru, de = catalogues.language("ru_RU").gettext, catalogues.language("de_DE").gettext
    now = datetime(2026, 12, 6, tzinfo=timezone.utc)
    missed = CallRecord(call_id="c", linkedid="l", uniqueid="u", number="+74951234567", direction="Inbound",
                        started_at=now, status="Not Held", outcome="missed",
                        parent_name="Константин Константинопольский-Старший")
    for gettext in (ru, de, None):
        text = outcome.subject(missed, gettext) if gettext else outcome.subject(missed)
        assert len(text) <= 50 and text.endswith("(+74951234567)"), text
    assert outcome.subject(missed, ru).startswith("Пропущенный звонок: Константин")
    out = CallRecord(call_id="c", linkedid="l", uniqueid="u", number="", direction="Outbound", started_at=now,
                     status="Held")
    assert outcome.subject(out, de) == "Ausgehender Anruf an unbekannte Nummer"


def test_missed_call_alerts_are_written_in_the_site_language_format_and_zone():
    from crmsync.missed import alert_description, alert_name

    de = catalogues.language("de_DE").gettext
    last = datetime(2026, 12, 6, 11, 20, tzinfo=timezone.utc)
    assert alert_name("+4930111", "Ann Smith", de) == "Verpasster Anruf: Ann Smith (+4930111)"
    assert alert_name("+4930111", "", de) == "Verpasster Anruf: +4930111"
    berlin = lambda when: dates.display(when, "d.m.Y", "H:i", "Europe/Berlin")  # noqa: E731
    assert alert_description(3, last, de, berlin) == "Versuche: 3. Letzter: 06.12.2026 12:20."
    assert alert_description(1, last) == "Attempts: 1. Last: 2026-12-06 11:20 UTC."
