"""``python -m crmlocale.extract``: the texts marked in the code -> crmagi.pot -> each .po.

Run it from the repository root after changing a marked text, then translate the new or
changed entries (Babel marks changed ones fuzzy; fuzzy entries are not used).
tests/test_i18n.py fails while a marked text has no translation in a catalogue.
"""
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po, write_po

from crmlocale.catalogues import DOMAIN, LOCALE_DIR, available

# Where texts live, and how to read them. Templates use the environment's settings
# (webpush/content.py), so their msgids are the ones the renderer asks for.
METHODS = [("agi/**.py", "python"), ("crmsync/**.py", "python"), ("webpush/**.py", "python"),
           ("templates/**.j2", "jinja2.ext:babel_extract"), ("webpush/static/**.js", "javascript")]
OPTIONS = {"templates/**.j2": {"trim_blocks": "true", "lstrip_blocks": "true"}}
KEYWORDS = dict(DEFAULT_KEYWORDS, phrase=None, t=None)


def template(root: Path) -> Catalog:
    catalog = Catalog(project="crmagi", domain=DOMAIN, charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
            str(root), METHODS, OPTIONS, KEYWORDS, strip_comment_tags=True):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context,
                    flags=("python-format",) if _placeholders(message) else ())
    return catalog


def _placeholders(message):
    text = message if isinstance(message, str) else message[0]
    return "%s" in text or "%d" in text or "%(" in text


def update(root: Path):
    pot = template(root)
    with (LOCALE_DIR / (DOMAIN + ".pot")).open("wb") as handle:
        write_po(handle, pot, width=100)
    for code in available():
        path = LOCALE_DIR / code / "LC_MESSAGES" / (DOMAIN + ".po")
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=code, domain=DOMAIN)
        catalog.update(pot, update_header_comment=False)
        with path.open("wb") as handle:
            write_po(handle, catalog, width=100, ignore_obsolete=True)
        untranslated = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
        print("%s: %d texts, %d to translate" % (code, len(catalog), len(untranslated)))


if __name__ == "__main__":
    update(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
