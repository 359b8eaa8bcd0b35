"""gettext catalogues (Babel) chosen by SuiteCRM language codes.

The source language is English; ``locale/<lang>/LC_MESSAGES/crmagi.po`` holds each
translation.  The .po files are what the repository and the package ship: they are
compiled in memory when first needed (Babel ``read_po`` + ``write_mo``, a few
milliseconds), so a clean clone, an editable install and a wheel behave alike and no
compiled .mo can drift from its .po.  ``python -m crmlocale.extract`` refreshes the
template and the catalogues from the code (README "Languages").

Texts are marked ``_()`` / ``N_()`` (Python), ``{{ _() }}`` (templates) and ``t()``
(webpush/static/*.js).  A text made now and shown later in a user's language (a
click-to-call progress line, a popup's state) is a ``Phrase``: its msgid and its
arguments, translated when it is sent to a tab.
"""
import functools
import gettext
import io
from pathlib import Path
from typing import Dict

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "crmagi"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SOURCE = "en"


def N_(msgid):
    """Marks a text for extraction where it is defined; it is translated where it is shown."""
    return msgid


class Phrase(str):
    """A text to translate later: its value is the English text, ``msgid % args``, so it works
    wherever a str does (logs, JSON, comparisons); ``Language.say`` gives the reader's language."""

    def __new__(cls, msgid, args=()):
        args = tuple(args)
        self = super().__new__(cls, _format(msgid, tuple(str(a) for a in args)))
        self.msgid, self.args = msgid, args
        return self

    def __reduce__(self):           # copies and pickles keep the msgid
        return (Phrase, (self.msgid, self.args))


def phrase(msgid, *args) -> Phrase:
    return Phrase(msgid, args)


def _format(text, args):
    return text % args if args else text


class Language:
    """One catalogue: gettext for Python and Jinja, and the texts of the browser scripts."""

    def __init__(self, code: str, translations: gettext.NullTranslations, js: Dict[str, str]):
        self.code = code                     # "ru", "de", or "en" (no catalogue: the source texts)
        self.translations = translations
        self.js = js                         # msgid -> translation, for t() in popup.js/recordings.js

    def gettext(self, msgid):
        return self.translations.gettext(msgid)

    def ngettext(self, singular, plural, n):
        return self.translations.ngettext(singular, plural, n)

    def say(self, text) -> str:
        """A str as it is (already in its language, or not translatable), a Phrase translated."""
        if isinstance(text, Phrase):
            return _format(self.gettext(text.msgid), tuple(self.say(a) for a in text.args))
        return str(text)


def _compile(path: Path):
    with path.open("rb") as handle:
        catalog = read_po(handle, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)          # fuzzy entries are left out, as msgfmt does
    buffer.seek(0)
    js = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy
          and any(place.endswith(".js") for place, _ in m.locations)}
    return gettext.GNUTranslations(buffer), js


@functools.lru_cache(maxsize=None)
def _load(code: str) -> Language:
    path = LOCALE_DIR / code / "LC_MESSAGES" / (DOMAIN + ".po")
    if code == SOURCE or not path.is_file():
        return Language(SOURCE, gettext.NullTranslations(), {})
    translations, js = _compile(path)
    return Language(code, translations, js)


@functools.lru_cache(maxsize=None)
def available():
    """The catalogue codes shipped, besides the English source."""
    return tuple(sorted(p.name for p in LOCALE_DIR.iterdir() if (p / "LC_MESSAGES" / (DOMAIN + ".po")).is_file()))


def language(suitecrm_code) -> Language:
    """The catalogue for a SuiteCRM language code (``ru_RU``, ``de_DE``, ``en_us``; any case):
    the exact locale when shipped, else its language, else English."""
    code = str(suitecrm_code or "").strip().replace("-", "_")
    head, _, region = code.partition("_")
    shipped = available()
    for candidate in ("%s_%s" % (head.lower(), region.upper()) if region else "", head.lower()):
        if candidate and candidate in shipped:
            return _load(candidate)
    return _load(SOURCE)
