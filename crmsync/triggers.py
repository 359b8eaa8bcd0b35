"""The digit key of the phone index, in Python and in SQL, and the triggers that keep it.

The key of a stored number is ``digits_rev``: the value with a trailing extension
suffix removed (``ext 12``, ``x12``, ``доб. 12``, ``#12``, ``;ext=12``), then only its
ASCII digits, reversed, and cut to the first ``KEY_DIGITS`` (the last digits of
the number).  A lookup for the last N digits of a caller is then the prefix read
``digits_rev LIKE '<those N digits reversed>%'``.

The rule is written once (``_EXTENSION_TEMPLATE``) and rendered twice: for
Python's ``re`` and for MariaDB's PCRE2 ``REGEXP_REPLACE``.  It is kept to what
both engines do identically, byte for byte (tests/test_phoneindex.py runs both
on a list of tricky values):

* ASCII digits only (``[0-9]``, never ``\\d``): PCRE without UCP and Python
  disagree on other digits; ``phone.parse`` reads ``٣`` or ``３`` as digits, the
  key does not, so such a stored number is found by neither path's prefilter;
* whitespace is what Python's ``\\s`` matches: ``[:space:]`` plus the other
  Unicode spaces written out as characters in SQL; no backslash reaches SQL,
  so the trigger bodies do not depend on ``NO_BACKSLASH_ESCAPES``;
* otherwise the extension rule is ``phone._EXTENSION``: for a value whose
  digits are ASCII, the key is ``phone.parse(value).digits`` reversed.

Triggers (MariaDB/MySQL): ``crmagi_<table>_ai``, ``_au`` and ``_ad``, AFTER INSERT,
UPDATE and DELETE.  The update trigger does nothing unless ``deleted``, ``id`` or
a configured phone column changed (compared as bytes), so ordinary edits cost a
few comparisons.  They cannot run phonenumbers: they write ``e164`` and
``national`` as NULL and ``parsed = 0``; ``crmagi index rebuild`` fills them in.
"""
import hashlib
import re

from sqlalchemy import bindparam, text

from .db import SchemaError

INDEX_TABLE = "crmagi_phone_index"
DIGITS_KEY = INDEX_TABLE + "_digits"     # its index on digits_rev
KEY_DIGITS = 32          # digits kept in digits_rev; a lookup never needs more
KEY_VERSION = "1"        # bump when the key rule changes: every trigger body changes with it
MAX_ID_LENGTH = 36       # record_id column width (SuiteCRM ids are char(36))
EVENTS = (("ai", "INSERT"), ("au", "UPDATE"), ("ad", "DELETE"))

_EXTENSION_TEMPLATE = (
    "(?i)(?<=[0-9{ws})])[{ws}]*(?:;[{ws}]*ext[{ws}]*=|#|ext[.]?|extn[.]?|extension|x|доб[.]?|вн[.]?)"
    "[{ws}]*[0-9]{{1,7}}[{ws}]*$")
# Every character Python's str.isspace() (and so phone._EXTENSION's \s) accepts; PCRE's
# [:space:] covers the ASCII ones, the others are spelled out for both.
_OTHER_SPACE = "\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PY_SPACE = " \t\n\v\f\r" + _OTHER_SPACE
_SQL_SPACE = "[:space:]" + _OTHER_SPACE
_EXTENSION = re.compile(_EXTENSION_TEMPLATE.format(ws=_PY_SPACE))
_NOT_DIGIT = re.compile("[^0-9]")
_SQL_EXTENSION = _EXTENSION_TEMPLATE.format(ws=_SQL_SPACE)
_NOT_PLAIN = "[^-0-9 ()+./]"   # a character an extension suffix needs (letters, #, ;, =, other spaces)
_NAME = re.compile(r"^[A-Za-z0-9_]+$")

assert "\\" not in _SQL_EXTENSION and "'" not in _SQL_EXTENSION


def digits_rev(value) -> str:
    """The index key of a stored value ('' when it has no ASCII digits): what the triggers compute."""
    if not value:
        return ""
    return _NOT_DIGIT.sub("", _EXTENSION.sub("", value))[::-1][:KEY_DIGITS]


def sql_digits_rev(expr) -> str:
    """The same key as an SQL expression over ``expr`` (NULL stays NULL)."""
    return "LEFT(REVERSE(REGEXP_REPLACE(REGEXP_REPLACE(%s, '%s', ''), '[^0-9]', '')), %d)" % (
        expr, _SQL_EXTENSION, KEY_DIGITS)


def _set_key(expr):
    """Trigger statements setting ``crmagi_key`` to ``sql_digits_rev(expr)``.

    A trigger compiles the regular expressions of every statement it runs, on
    every row, and the extension one is the costly one (~15 µs).  It only runs
    when the value holds something besides digits and ``-() +./``, without
    which no extension suffix can match; the result is the same.
    """
    return ("IF %s REGEXP '%s' THEN SET crmagi_key = %s; "
            "ELSE SET crmagi_key = LEFT(REVERSE(REGEXP_REPLACE(%s, '[^0-9]', '')), %d); END IF;"
            % (expr, _NOT_PLAIN, sql_digits_rev(expr), expr, KEY_DIGITS))


def check_name(kind, name):
    """Module, table and column names go into trigger bodies: letters, digits and _ only."""
    if not _NAME.match(name or ""):
        raise SchemaError("%s %r: only letters, digits and _ are supported by the phone index" % (kind, name))
    return name


def trigger_name(table, event):
    name = "crmagi_%s_%s" % (table, event)
    if len(name) > 64:                     # MariaDB's identifier limit
        digest = hashlib.sha1(table.encode()).hexdigest()[:8]
        name = "crmagi_%s_%s_%s" % (table[:45], digest, event)
    return name


def by_table(specs):
    """table -> [(module, phone_fields)] for the configured modules, validated."""
    tables = {}
    for spec in specs:
        check_name("module", spec.name)
        check_name("table", spec.table)
        for field in spec.phone_fields:
            check_name("column %s." % spec.table, field)
        tables.setdefault(spec.table, []).append((spec.name, tuple(dict.fromkeys(spec.phone_fields))))
    return tables


def bodies(specs):
    """{trigger name: (table, event keyword, body)} for every configured table."""
    found = {}
    for table, modules in by_table(specs).items():
        for suffix, event in EVENTS:
            found[trigger_name(table, suffix)] = (table, event, _BODY[suffix](modules))
    return found


def fingerprint(specs):
    """Changes whenever a trigger body would: the rebuild records it, is_ready compares it."""
    text = "\n".join("%s\n%s" % (name, body) for name, (_, _, body) in sorted(bodies(specs).items()))
    return hashlib.sha256(("v%s\n%s" % (KEY_VERSION, text)).encode("utf-8")).hexdigest()[:32]


def create_statement(name, table, event, body, replace=False):
    return "CREATE %sTRIGGER `%s` AFTER %s ON `%s` FOR EACH ROW %s" % (
        "OR REPLACE " if replace else "", name, event, table, body)


# -- bodies ---------------------------------------------------------------------------------

_DECLARE = "DECLARE crmagi_key VARCHAR(%d) CHARACTER SET ascii DEFAULT NULL;" % KEY_DIGITS


def _upsert(module, field, otherwise=""):
    """Compute the key of NEW.field; store it, or (``otherwise``) do something else when it is empty."""
    return ("%s "
            "IF crmagi_key <> '' THEN "
            "INSERT INTO `%s` (module, record_id, field, digits_rev) VALUES ('%s', NEW.id, '%s', crmagi_key) "
            "ON DUPLICATE KEY UPDATE digits_rev = VALUES(digits_rev), e164 = NULL, national = NULL, parsed = 0;"
            "%s END IF;" % (_set_key("NEW.`%s`" % field), INDEX_TABLE, module, field,
                            " ELSE " + otherwise if otherwise else ""))


def _insert_all(module, fields):
    return " ".join(_upsert(module, field) for field in fields)


def _delete_record(module, which):
    return "DELETE FROM `%s` WHERE module = '%s' AND record_id = %s.id;" % (INDEX_TABLE, module, which)


def _changed(column):
    return "NOT (CAST(NEW.`{0}` AS BINARY) <=> CAST(OLD.`{0}` AS BINARY))".format(column)


def _refresh_field(module, field):
    delete = "DELETE FROM `%s` WHERE module = '%s' AND record_id = NEW.id AND field = '%s';" % (
        INDEX_TABLE, module, field)
    return "IF %s THEN %s END IF;" % (_changed(field), _upsert(module, field, otherwise=delete))


def _after_insert(modules):
    return "BEGIN %s IF NEW.deleted = 0 THEN %s END IF; END" % (_DECLARE, " ".join(
        _insert_all(module, fields) for module, fields in modules))


def _after_update(modules):
    parts = []
    for module, fields in modules:
        parts.append(
            "IF %s OR %s THEN %s IF NEW.deleted = 0 THEN %s END IF; "
            "ELSEIF NEW.deleted = 0 THEN %s END IF;" % (
                _changed("deleted"), _changed("id"), _delete_record(module, "OLD"),
                _insert_all(module, fields), " ".join(_refresh_field(module, f) for f in fields)))
    return "BEGIN %s %s END" % (_DECLARE, " ".join(parts))


def _after_delete(modules):
    return "BEGIN %s END" % " ".join(_delete_record(module, "OLD") for module, _ in modules)


_BODY = {"ai": _after_insert, "au": _after_update, "ad": _after_delete}


def installed(conn, tables=None):
    """{trigger name: (table, body)} of the crmagi triggers in the connection's database."""
    sql = ("SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS"
           " WHERE TRIGGER_SCHEMA = DATABASE()")
    stmt, params = text(sql), {}
    if tables:
        stmt = text(sql + " AND EVENT_OBJECT_TABLE IN :tables").bindparams(bindparam("tables", expanding=True))
        params["tables"] = list(tables)
    return {name: (table, body) for name, table, body in conn.execute(stmt, params)
            if name.startswith("crmagi_") and INDEX_TABLE in (body or "")}
