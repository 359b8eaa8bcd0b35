"""crmsync/parsememo.py: a phone value's parse kept in its index row, believed only for the
very value, region and parser it was made from (issue #12: the lookup's tail)."""
import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import text

from crmsync import parsememo, phone
from crmsync.directory import Directory
from crmsync.phoneindex import PhoneIndex
from crmsync.triggers import INDEX_TABLE
from test_phone import REGIONS, numbers, written
from test_phoneindex import HYPOTHESIS, TRICKY, add_and_index, both, execute, fresh, rules, same  # noqa: F401

IVAN = "8 (499) 123-45-67"          # c-ivan's phone_work (tests/test_directory.py)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_memo_reads_back_as_the_parse(data):
    raw = data.draw(written(data.draw(numbers())))
    region = data.draw(st.sampled_from(sorted(REGIONS)))
    memo = parsememo.make(raw, region)
    assert memo is not None and parsememo.read(raw, region, memo) == phone.parse(raw, region)


@pytest.mark.parametrize("raw", TRICKY + ["+44 20 7946 0000", "0049 30 1234567", IVAN])
@pytest.mark.parametrize("region", sorted(REGIONS))
def test_a_memo_is_the_parse_or_nothing_on_odd_text(raw, region):
    memo = parsememo.make(raw, region)
    if phone.parse(raw, region) is None:
        assert memo is None
    elif memo is not None:
        assert parsememo.read(raw, region, memo) == phone.parse(raw, region)


@pytest.mark.parametrize("other", [
    (IVAN + " ", "RU", parsememo.PARSER),              # another value (one space more)
    ("8 (499) 123-45-68", "RU", parsememo.PARSER),
    (IVAN, "DE", parsememo.PARSER),                    # another region
    (IVAN, "RU", "0000000000000000/" + parsememo.PARSER.split("/")[1]),   # crmsync/phone.py changed
    (IVAN, "RU", parsememo.PARSER.split("/")[0] + "/0.0.0"),             # another phonenumbers
])
def test_a_memo_is_not_believed_for_another_value_region_or_parser(other, monkeypatch):
    raw, region, parser = other
    memo = parsememo.make(IVAN, "RU")
    monkeypatch.setattr(parsememo, "PARSER", parser)
    monkeypatch.setattr(parsememo.digest, "__defaults__", (parser,))
    assert parsememo.read(raw, region, memo) is None
    assert parsememo.read(raw, region, None) is None and parsememo.read(raw, region, "") is None


def _parses(monkeypatch):
    """Every value phone.parse is asked for from now on (its cache emptied first)."""
    asked, parse = [], phone.parse
    phone.clear_cache()
    monkeypatch.setattr(phone, "parse", lambda raw, region: asked.append(raw) or parse(raw, region))
    return asked


def _memos(engine):
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT CONCAT(record_id, '.', field), parse_memo FROM %s" % INDEX_TABLE)).all())


def test_a_lookup_parses_only_the_caller_once_the_index_has_its_memos(fresh, monkeypatch):
    add_and_index(fresh)                                    # rebuilt under region RU
    memos = _memos(fresh)
    assert memos and all(memos.values()), [k for k, v in memos.items() if not v]
    asked = _parses(monkeypatch)
    indexed, scanned = both(fresh, "+7 (499) 123-45-67", "RU")
    same(indexed, scanned)
    assert indexed.caller.record_id == "c-ivan" and indexed.caller.rule == "e164"
    assert asked.count(IVAN) == 1          # the scan's parse; the indexed lookup took the memo
    # Under another region the same memos are not believed: the candidate is parsed.
    asked.clear()
    Directory(fresh, rules("DE"), users_cache_seconds=3600).lookup("+7 (499) 123-45-67")
    assert IVAN in asked


def test_a_memo_of_another_value_is_parsed_past(fresh, monkeypatch):
    """A row whose memo was made from another text (a value changed without a trigger, e.g.
    ``ALTER TABLE ... MODIFY`` truncating it) costs a parse, not a wrong match."""
    add_and_index(fresh)
    execute(fresh, "UPDATE %s SET parse_memo = :m WHERE record_id = 'c-ivan' AND field = 'phone_work'"
            % INDEX_TABLE, m=parsememo.make("+1 499 123 4567", "RU"))
    asked = _parses(monkeypatch)
    indexed, scanned = both(fresh, "+7 (499) 123-45-67", "RU")
    same(indexed, scanned)
    assert (indexed.caller.record_id, indexed.caller.rule) == ("c-ivan", "e164")
    assert asked.count(IVAN) == 2          # the indexed lookup parsed the value too


def test_an_index_without_the_memo_column_works_until_install_adds_it(fresh):
    add_and_index(fresh)
    execute(fresh, "ALTER TABLE %s DROP COLUMN parse_memo" % INDEX_TABLE)
    index = PhoneIndex(fresh, rules())
    same(*both(fresh, "+7 (499) 123-45-67", "RU"))      # a Directory started now reads no memo
    assert index.check() == []
    index.ensure_table()                                # `crmagi index install` adds the column
    assert set(_memos(fresh).values()) == {None}
    written_rows = index.rebuild()
    assert written_rows == len(_memos(fresh)) and all(_memos(fresh).values())
    assert index.rebuild() == 0                         # and then writes nothing
    same(*both(fresh, "+7 (499) 123-45-67", "RU"))
