"""crmsync.phoneindex (+ triggers, indexsync) and the index path of Directory, on the real MariaDB."""
import random
import sys

import gevent
import pytest
from click.testing import CliRunner
from gevent.event import Event
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import create_engine, text

from agi.cli import main
from crmsync import indexsync, phone, triggers
from crmsync.db import SchemaError, make_engine
from crmsync.directory import Directory
from crmsync.models import LookupRules, ModuleSpec
from crmsync.phoneindex import PhoneIndex, PhoneIndexError
from crmsync.triggers import INDEX_TABLE, digits_rev, sql_digits_rev
from test_directory import ACCOUNTS, CONTACTS, LEADS, account, add_rows, contact, insert
from test_end_to_end import wait_for
from test_phone import REGIONS, numbers, written

PATSY = "13ca4a4c-562d-57d3-c959-6b082d7b086f"
HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])


def rules(region="RU", modules=(CONTACTS, ACCOUNTS, LEADS), **kwargs):
    return LookupRules(modules=tuple(modules), default_region=region, **kwargs)


def index_rows(engine, record_id=None):
    """{(module, record_id, field): (digits_rev, e164, national, parsed)}"""
    sql = "SELECT module, record_id, field, digits_rev, e164, national, parsed FROM %s" % INDEX_TABLE
    with engine.connect() as conn:
        rows = (conn.execute(text(sql + " WHERE record_id = :r"), {"r": record_id}) if record_id
                else conn.execute(text(sql)))
        return {tuple(row[:3]): tuple(row[3:]) for row in rows}


def keys(engine, record_id):
    return {field: row[0] for (_, _, field), row in index_rows(engine, record_id).items()}


def expected_rows(engine, specs=(CONTACTS, ACCOUNTS, LEADS)):
    """What the index must hold, computed in Python from the CRM tables."""
    wanted = {}
    with engine.connect() as conn:
        for spec in specs:
            columns = ", ".join(spec.phone_fields)
            for row in conn.execute(text("SELECT id, deleted, %s FROM %s" % (columns, spec.table))):
                if row[1] == 0:
                    for field, value in zip(spec.phone_fields, row[2:]):
                        if digits_rev(value):
                            wanted[(spec.name, row[0], field)] = digits_rev(value)
    return wanted


def execute(engine, sql, **params):
    with engine.begin() as conn:
        return conn.execute(text(sql), params)


def add_and_index(engine):
    """test_directory's rows added, the index installed and built (region RU)."""
    with engine.begin() as conn:
        add_rows(conn)
    index = PhoneIndex(engine, rules())
    index.install_triggers()
    index.rebuild()


def indexed_engine(url):
    """An engine on ``url`` with ``add_and_index`` done."""
    engine = make_engine(url, pool_size=5)
    add_and_index(engine)
    return engine


@pytest.fixture(scope="module")
def engine(crm_url_module):
    """Sample data, test_directory's rows, the index installed and built (region RU)."""
    engine = indexed_engine(crm_url_module)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh(crm_url):
    engine = make_engine(crm_url, pool_size=5)
    yield engine
    engine.dispose()


# -- the key: Python and SQL agree ------------------------------------------------------------

TRICKY = [
    "8 (499) 123-45-67", "+7 499 123 45 67 доб. 12", "+7 499 123 45 67 ДОБ 12", "8 499 1234567 вн.5",
    "(499) 123-45-67 x12", "(499) 123-45-67 X 12", "030 1234567 ext 3", "030 1234567 Ext. 3 ", "030 1234567 extn. 44",
    "030 1234567 extension 44", "030 1234567;ext=55", "030 1234567 ; EXT = 55", "030 1234567#12", "030 1234567 # 12",
    "fax 123 4567", "x12", "12)x5", "1\u00a0ext\u00a012", "1\u202fx 5", "12\tx3\n", "12\u2003x3", "12 x 12345678",
    "12 доб12 x3", "+49 (30) 1234-5678 / x 9", "0049.30.12345678", "+1-650-253-0000,,123", "1-800-FLOWERS",
    "٣٤٥ 12", "１２３", "²³ 45", "", "   ", "abc", "-", "+", "0" * 40, "1234567890" * 5 + " x1", "doб 12",
    "Ivan's phone: +7 916 444-55-66!", "+7 916 444-55-66 (мобильный)", "+7 916 444-55-66 доб.", "#12", "12#",
]


def _sql_keys(engine, values):
    """The SQL key of each value, read from a utf8mb3 column (as in SuiteCRM) of both collations."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE keytest (id INT PRIMARY KEY,"
                             " ci VARCHAR(255) CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci,"
                             " bin VARCHAR(255) CHARACTER SET utf8mb3 COLLATE utf8mb3_bin)")
        try:
            conn.exec_driver_sql("INSERT INTO keytest VALUES (%s, %s, %s)",
                                 [(n, value, value) for n, value in enumerate(values)])
            rows = conn.exec_driver_sql("SELECT id, %s, %s FROM keytest ORDER BY id" % (
                sql_digits_rev("ci"), sql_digits_rev("bin"))).all()
        finally:
            conn.exec_driver_sql("DROP TEMPORARY TABLE keytest")
    return [(ci, bin_) for _, ci, bin_ in rows]


def test_python_and_sql_keys_agree_byte_for_byte(engine):
    for value, (ci, bin_) in zip(TRICKY, _sql_keys(engine, TRICKY)):
        assert (ci, bin_) == (digits_rev(value), digits_rev(value)), value
    assert digits_rev("8 (499) 123-45-67 доб. 12") == "76543219948"
    assert digits_rev("0" * 40) == "0" * triggers.KEY_DIGITS


def test_triggers_compute_the_same_keys(engine):
    """The triggers split the SQL key in two (the extension regex only for values that need it)."""
    values = [value for value in TRICKY if len(value) <= 100]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO leads (id, last_name, deleted, phone_work, phone_home) VALUES"
                          " (:id, 'Key', 0, :v, :v)"), [{"id": "key-%02d" % n, "v": v} for n, v in enumerate(values)])
    got = {record_id: digits for (_, record_id, field), (digits, _, _, _) in index_rows(engine).items()
           if record_id.startswith("key-") and field == "phone_work"}
    assert got == {"key-%02d" % n: digits_rev(v) for n, v in enumerate(values) if digits_rev(v)}
    execute(engine, "UPDATE leads SET phone_work = phone_home, phone_home = CONCAT(phone_home, ' x1')"
                    " WHERE id LIKE 'key-%'")
    assert {key[1]: value[0] for key, value in index_rows(engine).items()
            if key[1].startswith("key-") and key[2] == "phone_home"} == {
        "key-%02d" % n: digits_rev(v + " x1") for n, v in enumerate(values) if digits_rev(v + " x1")}
    execute(engine, "DELETE FROM leads WHERE id LIKE 'key-%'")


TOKENS = (list("0123456789") + [" ", "  ", "-", "(", ")", ".", "+", "/", ",", "#", ";", "=", ":", "\t", "\n",
                                "\u00a0", "\u202f", "\u2009", "\u3000", "x", "X", "ext", "EXT", "Ext.", "extn",
                                "extension", "доб", "Доб.", "ДОБ", "вн", "ВН.", "fax", "a", "٣", "１", "²", "'"])
VALUES = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)


@settings(max_examples=60, **HYPOTHESIS)
@given(values=st.lists(VALUES, min_size=1, max_size=30))
def test_python_and_sql_keys_agree_on_random_text(engine, values):
    assert _sql_keys(engine, values) == [(digits_rev(v), digits_rev(v)) for v in values]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=10))
def test_key_is_phone_parse_digits_reversed_for_ascii_digits(values):
    for value in values:
        if all(ch.isascii() for ch in value if ch.isdigit()):
            parsed = phone.parse(value, "RU")
            assert digits_rev(value) == (parsed.digits[::-1][:triggers.KEY_DIGITS] if parsed else ""), value


def test_whitespace_class_is_pythons():
    import re

    spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    covered = {ch for ch in spaces if re.fullmatch("[%s]" % triggers._PY_SPACE, ch)}
    assert covered == spaces


# -- triggers -----------------------------------------------------------------------------

def test_insert_update_delete_keep_the_index(engine):
    with engine.begin() as conn:
        contact(conn, "t-1", "Tina", "Trigger", phone_work="+7 (812) 700-11-22 доб. 5", phone_mobile="89161234500",
                phone_home="")
    assert keys(engine, "t-1") == {"phone_work": "22110072187", "phone_mobile": "00543216198"}
    row = index_rows(engine, "t-1")[("Contacts", "t-1", "phone_work")]
    assert row[1:] == (None, None, 0)           # e164/national await a rebuild

    execute(engine, "UPDATE contacts SET phone_work = '+7 812 700 99 88' WHERE id = 't-1'")
    assert keys(engine, "t-1")["phone_work"] == digits_rev("+78127009988")
    execute(engine, "UPDATE contacts SET phone_mobile = NULL, phone_other = '8 812 111-22-33' WHERE id = 't-1'")
    assert keys(engine, "t-1") == {"phone_work": "88990072187", "phone_other": "33221112188"}
    execute(engine, "UPDATE contacts SET phone_other = 'no phone' WHERE id = 't-1'")
    assert set(keys(engine, "t-1")) == {"phone_work"}

    execute(engine, "UPDATE contacts SET deleted = 1 WHERE id = 't-1'")            # soft delete
    assert keys(engine, "t-1") == {}
    execute(engine, "UPDATE contacts SET phone_home = '+7 499 765 00 01' WHERE id = 't-1'")   # edits while deleted
    assert keys(engine, "t-1") == {}
    execute(engine, "UPDATE contacts SET deleted = 0 WHERE id = 't-1'")            # undelete
    assert keys(engine, "t-1") == {"phone_work": digits_rev("+78127009988"), "phone_home": digits_rev("+74997650001")}
    execute(engine, "DELETE FROM contacts WHERE id = 't-1'")                        # hard delete
    assert keys(engine, "t-1") == {}

    with engine.begin() as conn:
        contact(conn, "t-2", "Dora", "Deleted", deleted=1, phone_work="+7 812 700 11 23")
    assert keys(engine, "t-2") == {}                                                # inserted deleted
    assert PhoneIndex(engine, rules()).check() == []


def test_update_of_other_columns_writes_nothing(engine):
    with engine.begin() as conn:
        account(conn, "t-acc", "Quiet Ltd", phone_office="+7 343 200-00-01")
    PhoneIndex(engine, rules()).rebuild()
    before = index_rows(engine, "t-acc")
    assert before[("Accounts", "t-acc", "phone_office")][1:] == ("+73432000001", "3432000001", 1)
    execute(engine, "UPDATE accounts SET name = 'Renamed', description = 'x', date_modified = NOW()"
                    " WHERE id = 't-acc'")
    execute(engine, "UPDATE accounts SET phone_office = '+7 343 200-00-01' WHERE id = 't-acc'")   # same bytes
    assert index_rows(engine, "t-acc") == before                 # still parsed: no trigger rewrote it
    execute(engine, "UPDATE accounts SET phone_office = '+7 343 200 00 01' WHERE id = 't-acc'")   # reformatted
    assert index_rows(engine, "t-acc")[("Accounts", "t-acc", "phone_office")] == (before[(
        "Accounts", "t-acc", "phone_office")][0], None, None, 0)


def test_bulk_update_of_many_rows(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO leads (id, last_name, deleted, phone_work, phone_mobile) VALUES "
                          + ", ".join("('bulk-%03d', 'Bulk', 0, '8 495 300-%02d-%02d', NULL)" % (n, n // 100, n % 100)
                                      for n in range(300))))
    execute(engine, "UPDATE leads SET phone_mobile = CONCAT('+7 916 ', RIGHT(id, 3), '-00-00'),"
                    " phone_work = IF(RIGHT(id, 1) = '0', NULL, phone_work) WHERE id LIKE 'bulk-%'")
    execute(engine, "UPDATE leads SET deleted = 1 WHERE id LIKE 'bulk-1%'")
    rows = {key: value[0] for key, value in index_rows(engine).items() if key[1].startswith("bulk-")}
    assert rows == {key: value for key, value in expected_rows(engine, [LEADS]).items() if key[1].startswith("bulk-")}
    assert len(rows) == 200 + 180
    assert PhoneIndex(engine, rules()).check() == []
    execute(engine, "DELETE FROM leads WHERE id LIKE 'bulk-%'")
    assert not [key for key in index_rows(engine) if key[1].startswith("bulk-")]


def test_existing_triggers_are_left_alone(fresh):
    execute(fresh, "CREATE TABLE audit (id VARCHAR(36), what VARCHAR(10))")
    for event in ("INSERT", "UPDATE", "DELETE"):
        with fresh.begin() as conn:
            conn.exec_driver_sql("CREATE TRIGGER suite_%s AFTER %s ON contacts FOR EACH ROW INSERT INTO audit"
                                 " VALUES (%s.id, '%s')" % (event.lower(), event,
                                                            "OLD" if event == "DELETE" else "NEW", event))
    index = PhoneIndex(fresh, rules("RU", [CONTACTS]))
    index.install_triggers()
    index.rebuild()
    with fresh.begin() as conn:
        contact(conn, "t-3", "A", "B", phone_work="+7 812 700 11 24")
    execute(fresh, "UPDATE contacts SET phone_work = '+7 812 700 11 25' WHERE id = 't-3'")
    execute(fresh, "DELETE FROM contacts WHERE id = 't-3'")
    assert execute(fresh, "SELECT what FROM audit WHERE id = 't-3'").scalars().all() == ["INSERT", "UPDATE", "DELETE"]
    assert index.uninstall_triggers()
    with fresh.connect() as conn:
        names = conn.execute(text("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS"
                                  " WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1")).scalars().all()
    assert names == ["suite_delete", "suite_insert", "suite_update"]


# -- install, readiness, configuration changes ------------------------------------------------

def test_install_is_idempotent_and_follows_the_config(fresh):
    narrow = PhoneIndex(fresh, rules("RU", [ModuleSpec("Contacts", "contacts", ("phone_work",))]))
    assert narrow.status() == (False, narrow.status()[1]) and "triggers missing" in narrow.status()[1]
    assert len(narrow.install_triggers()) == 3
    assert "not rebuilt" in narrow.status()[1]
    narrow.rebuild()
    assert narrow.status()[0]
    assert narrow.install_triggers() == [] and narrow.is_ready()       # nothing to do, still ready
    assert {field for (_, _, field) in index_rows(fresh)} == {"phone_work"}

    wide = PhoneIndex(fresh, rules("RU", [CONTACTS, LEADS]))
    assert not wide.is_ready()                                             # other bodies wanted
    changes = wide.install_triggers()
    assert sorted(changes) == sorted([                   # the delete trigger does not depend on the fields
        "replaced crmagi_contacts_ai on contacts", "replaced crmagi_contacts_au on contacts",
        "created crmagi_leads_ai on leads", "created crmagi_leads_au on leads", "created crmagi_leads_ad on leads"])
    assert not wide.is_ready() and not narrow.is_ready()
    assert wide.rebuild() > 0 and wide.is_ready()
    assert {m for (m, _, _) in index_rows(fresh)} == {"Contacts", "Leads"}
    assert len(index_rows(fresh)) == 20 * 3 * 2

    leads_only = PhoneIndex(fresh, rules("RU", [LEADS]))
    assert leads_only.install_triggers() == ["dropped crmagi_contacts_ad on contacts",
                                             "dropped crmagi_contacts_ai on contacts",
                                             "dropped crmagi_contacts_au on contacts"]
    leads_only.rebuild()
    assert leads_only.last_rebuild.deleted == 60 and leads_only.is_ready()
    assert {m for (m, _, _) in index_rows(fresh)} == {"Leads"}
    assert leads_only.check() == []


def test_schema_problems_and_other_backends(fresh, tmp_path):
    broken = PhoneIndex(fresh, rules("RU", [ModuleSpec("Contacts", "contacts", ("phone_work", "phone_bogus")),
                                            ModuleSpec("Things", "crmagi_things", ("phone",))]))
    with pytest.raises(SchemaError, match="contacts.phone_bogus: column not found; crmagi_things: table not found"):
        broken.install_triggers()
    with pytest.raises(SchemaError, match="only letters, digits and _"):
        PhoneIndex(fresh, rules("RU", [ModuleSpec("Contacts'; --", "contacts", ("phone_work",))])).install_triggers()
    sqlite = create_engine("sqlite:///%s" % (tmp_path / "crm.sqlite"))
    index = PhoneIndex(sqlite, rules())
    assert index.status() == (False, "needs MariaDB or MySQL (this CRM database is sqlite)")
    with pytest.raises(PhoneIndexError, match="needs MariaDB or MySQL"):
        index.install_triggers()
    with pytest.raises(PhoneIndexError):
        index.rebuild()


# -- rebuild ----------------------------------------------------------------------------------

def _generate(engine, count, seed=1):
    """count contacts with mixed formats (some deleted, some without phones)."""
    rng = random.Random(seed)

    def number():
        area = rng.choice(["495", "499", "812", "903", "916"])
        digits = "%07d" % rng.randrange(10 ** 7)
        return rng.choice(["+7 ({a}) {d3}-{d2}-{e2}", "8{a}{d}", "{d3}-{d2}-{e2}", "+7{a}{d} доб. 12",
                           "8 {a} {d3} {d2} {e2} x5", ""]).format(a=area, d=digits, d3=digits[:3], d2=digits[3:5],
                                                                   e2=digits[5:])

    rows = [{"id": "g-%06d" % n, "deleted": int(rng.random() < 0.05), "w": number(), "m": number(),
             "h": number() or None} for n in range(count)]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO contacts (id, last_name, deleted, phone_work, phone_mobile, phone_home)"
                          " VALUES (:id, 'Gen', :deleted, :w, :m, :h)"), rows)


def test_rebuild_is_idempotent_and_repairs(fresh):
    _generate(fresh, 3000)
    index = PhoneIndex(fresh, rules("RU", [CONTACTS, ACCOUNTS]), batch_size=500)
    index.install_triggers()
    seen = []
    first = index.rebuild(progress=seen.append)
    assert sum(seen) == index.source_count() == 3000 + 20 + 20 and len(seen) > 6
    rows = index_rows(fresh)
    assert first == len(rows) and {k: v[0] for k, v in rows.items()} == expected_rows(fresh, [CONTACTS, ACCOUNTS])
    assert all(parsed == 1 for (_, _, _, parsed) in rows.values())
    assert rows[("Contacts", PATSY, "phone_mobile")][1:] == ("+77252356325", "7252356325", 1)   # (725) … in RU

    assert index.rebuild() == 0 and index_rows(fresh) == rows                          # twice: same rows
    assert index.last_rebuild.written == index.last_rebuild.deleted == 0

    execute(fresh, "UPDATE crmagi_phone_index SET digits_rev = '1'"
                   " WHERE record_id = 'g-000001' AND field = 'phone_work'")
    execute(fresh, "DELETE FROM crmagi_phone_index WHERE record_id = 'g-000002'")
    execute(fresh, "INSERT INTO crmagi_phone_index (module, record_id, field, digits_rev) VALUES"
                   " ('Contacts', 'zz-ghost', 'phone_work', '1'), ('Contacts', '0-ghost', 'phone_home', '1'),"
                   " ('Contacts', 'g-000003', 'phone_fax', '1'), ('Prospects', 'p', 'phone_work', '1')")
    assert index.rebuild() == 1 + 2 + 4 and index_rows(fresh) == rows
    assert index.check() == []

    full = PhoneIndex(fresh, rules("US", [CONTACTS, ACCOUNTS]))      # another region: e164 recomputed
    assert full.rebuild() == len(rows) and full.check() == []
    assert index_rows(fresh)[("Contacts", PATSY, "phone_mobile")][1] == "+17252356325"


def test_check_reports_hand_corrupted_rows(fresh):
    index = PhoneIndex(fresh, rules("US", [CONTACTS, LEADS]))
    index.install_triggers()
    index.rebuild()
    assert index.check() == [] and index.check(sample=5) == [] and index.pending() == 0
    execute(fresh, "UPDATE crmagi_phone_index SET digits_rev = '0000'"
                   " WHERE record_id = :r AND field = 'phone_work'", r=PATSY)
    execute(fresh, "DELETE FROM crmagi_phone_index WHERE record_id = :r AND field = 'phone_home'", r=PATSY)
    execute(fresh, "INSERT INTO crmagi_phone_index (module, record_id, field, digits_rev) VALUES"
                   " ('Contacts', 'gone', 'phone_work', '1'), ('Contacts', :r, 'assistant_phone', '9'),"
                   " ('Accounts', 'a', 'phone_office', '1')", r=PATSY)
    execute(fresh, "UPDATE contacts SET phone_other = '555 0101' WHERE id = :r", r=PATSY)   # a trigger write: fine
    problems = index.check()
    assert problems == [
        "Contacts %s assistant_phone: extra row (no digits in the column)" % PATSY,
        "Contacts %s phone_home: missing (the table has '(061) 308-5695')" % PATSY,
        "Contacts %s phone_work: digits_rev '0000', but '(033) 097-7089' gives '9807790330'" % PATSY,
        "Contacts gone phone_work: extra row (record deleted or gone)",
        "Accounts: 1 row(s) of a module that is not configured (run `crmagi index rebuild`)",
    ]
    assert index.pending() == 1 + 3      # the trigger's row and the hand-made ones
    index.rebuild()
    assert index.check() == [] and index.pending() == 0


# -- rebuild while users edit -----------------------------------------------------------------

def _edit(engine, rng, ids):
    """One random user edit; returns nothing, the check afterwards says whether it was lost."""
    record_id = rng.choice(ids)
    choice = rng.random()
    with engine.begin() as conn:
        if choice < 0.5:
            field = rng.choice(["phone_work", "phone_mobile", "phone_home", "phone_other"])
            conn.execute(text("UPDATE contacts SET %s = :v WHERE id = :id" % field),
                         {"v": rng.choice(["+7 495 %07d" % rng.randrange(10 ** 7), "", None, "x"]), "id": record_id})
        elif choice < 0.7:
            conn.execute(text("UPDATE contacts SET deleted = 1 - deleted WHERE id = :id"), {"id": record_id})
        elif choice < 0.85:
            conn.execute(text("DELETE FROM contacts WHERE id = :id"), {"id": record_id})
        else:
            new = "g-%06d-new%d" % (rng.randrange(3000), rng.randrange(10 ** 6))
            conn.execute(text("INSERT INTO contacts (id, last_name, deleted, phone_work) VALUES (:id, 'New', 0, :v)"),
                         {"id": new, "v": "8 916 %07d" % rng.randrange(10 ** 7)})
            ids.append(new)


def test_rebuild_concurrent_with_edits_loses_nothing(fresh):
    _generate(fresh, 3000, seed=2)
    index = PhoneIndex(fresh, rules("RU", [CONTACTS]), batch_size=40)
    index.install_triggers()
    execute(fresh, "UPDATE crmagi_phone_index SET digits_rev = '1'")     # stale rows everywhere
    ids = ["g-%06d" % n for n in range(3000)]
    rng, edits, done = random.Random(3), [0], []

    def edit_until_done():
        while not done:
            _edit(fresh, rng, ids)
            edits[0] += 1
            gevent.sleep(0)

    editor = gevent.spawn(edit_until_done)
    try:
        index.rebuild()
    finally:
        done.append(True)
        editor.join(10)
    assert editor.successful(), editor.exception
    assert edits[0] > 50
    assert {k: v[0] for k, v in index_rows(fresh).items()} == expected_rows(fresh, [CONTACTS])
    assert index.check() == []


def test_rebuild_never_overwrites_a_write_made_after_its_read(fresh, monkeypatch):
    """The races, one by one: between the batch's read and its write, a user changes a number,
    empties one, soft-deletes a record, undeletes one, hard-deletes one and adds one."""
    index = PhoneIndex(fresh, rules("US", [CONTACTS]))
    index.install_triggers()
    index.rebuild()
    ids = sorted(execute(fresh, "SELECT id FROM contacts").scalars().all())
    a, b, c, d, e = ids[:5]
    execute(fresh, "UPDATE contacts SET deleted = 1 WHERE id = :d", d=d)
    execute(fresh, "UPDATE crmagi_phone_index SET parsed = 0")              # make the rebuild rewrite every row
    execute(fresh, "INSERT INTO crmagi_phone_index (module, record_id, field, digits_rev) VALUES"
                   " ('Contacts', :d, 'phone_work', '1')", d=d)            # an extra row the rebuild will drop
    original = indexsync.Sync.apply
    raced = []

    def racing_apply(self, spec, batch, full):
        if not raced:
            raced.append(True)
            other = make_engine(fresh.url.render_as_string(hide_password=False), pool_size=1)
            with other.begin() as conn:
                conn.execute(text("UPDATE contacts SET phone_work = '+1 650 253 0000' WHERE id = :a"), {"a": a})
                conn.execute(text("UPDATE contacts SET phone_mobile = NULL WHERE id = :b"), {"b": b})
                conn.execute(text("UPDATE contacts SET deleted = 1 WHERE id = :c"), {"c": c})
                conn.execute(text("UPDATE contacts SET deleted = 0, phone_work = '212 555 0100' WHERE id = :d"),
                             {"d": d})
                conn.execute(text("DELETE FROM contacts WHERE id = :e"), {"e": e})
                conn.execute(text("INSERT INTO contacts (id, last_name, deleted, phone_work) VALUES"
                                  " ('0-new', 'New', 0, '415 555 0199')"))
            other.dispose()
        return original(self, spec, batch, full)

    monkeypatch.setattr(indexsync.Sync, "apply", racing_apply)
    index.rebuild()
    assert raced
    got = {k: v[0] for k, v in index_rows(fresh).items()}
    assert got == expected_rows(fresh, [CONTACTS])
    assert got[("Contacts", a, "phone_work")] == digits_rev("16502530000")
    assert got[("Contacts", d, "phone_work")] == digits_rev("2125550100")
    assert ("Contacts", "0-new", "phone_work") in got
    assert index.check() == []


def test_rebuild_waits_for_an_uncommitted_edit(fresh):
    """A user's update still open while the batch is written: the batch must read the committed
    row under a lock (and wait), not its snapshot, or it would overwrite the trigger's key."""
    index = PhoneIndex(fresh, rules("US", [CONTACTS]))
    index.install_triggers()
    index.rebuild()
    execute(fresh, "UPDATE crmagi_phone_index SET parsed = 0")              # every row gets rewritten
    user = fresh.connect()
    user.execute(text("UPDATE contacts SET phone_work = '+1 650 253 0000' WHERE id = :r"), {"r": PATSY})
    rebuilding = gevent.spawn(index.rebuild)
    gevent.sleep(0.5)
    assert not rebuilding.ready()                                          # waiting for the user's row lock
    user.commit()
    user.close()
    rebuilding.get(timeout=15)
    assert keys(fresh, PATSY)["phone_work"] == digits_rev("16502530000")
    assert index.check() == []


# -- lookups: the index path equals the scan path -----------------------------------------------

def both(engine, number, region="RU", modules=(CONTACTS, ACCOUNTS, LEADS), **kwargs):
    indexed = Directory(engine, rules(region, modules, **kwargs), users_cache_seconds=3600).lookup(number)
    scanned = Directory(engine, rules(region, modules, **kwargs), use_index=False).lookup(number)
    return indexed, scanned


def same(indexed, scanned):
    assert (indexed.status, indexed.e164, indexed.caller) == (scanned.status, scanned.e164, scanned.caller), (
        indexed.explain, scanned.explain)


SAMPLE_NUMBERS = ["0330977089", "+1 725-235-6325", "18177308298", "800 967 1456", "(033) 097-7089"]
OWN_NUMBERS = ["+74991234567", "84991234567", "4991234567", "+7 (499) 123-45-67", "+7 495 123-45-68", "+74957654321",
               "+78125551234", "+79031112233", "+79164445566", "+73435550011", "+73435550066", "+74959998877",
               "+74952223344", "+7 999 000-00-00", "+74950001234", "1234567", "123456", "030 12345678",
               "+49 30 12345678", "493012345678", "1234", "anonymous", ""]


@pytest.mark.parametrize("region", ["RU", "US", "DE"])
def test_index_and_scan_agree_on_the_sample_and_our_rows(engine, region):
    for number in SAMPLE_NUMBERS + OWN_NUMBERS:
        indexed, scanned = both(engine, number, region)
        same(indexed, scanned)
        if indexed.status in ("found", "unknown") and len(phone.parse(number, region).digits) > 5:
            assert any(line.startswith("index: ") for line in indexed.explain), indexed.explain
            assert any(line.startswith("scan: the phone index is not used (disabled)") for line in scanned.explain)
    for modules in [(LEADS, ACCOUNTS, CONTACTS), (ACCOUNTS,)]:
        same(*both(engine, "+74957654321", "RU", modules))


def test_explain_names_the_index_path(engine):
    result = Directory(engine, rules("RU")).lookup("+7 (499) 123-45-67")
    assert result.caller.record_id == "c-ivan"
    assert "index: 1 candidate(s) ending in 1234567, Contacts 1" in result.explain
    assert "Contacts: 1 live record(s) joined to the index, 1 matching column(s)" in result.explain


def test_the_index_finds_what_the_scan_cannot(engine):
    """Separators the scan does not strip (NBSP, en dash) do not hide a number from the index."""
    with engine.begin() as conn:
        contact(conn, "t-nbsp", "Nadia", "Space", phone_work="+7\u00a0343\u00a0777\u201312\u201334")
    indexed, scanned = both(engine, "+73437771234")
    assert indexed.caller.record_id == "t-nbsp" and scanned.status == "unknown"
    execute(engine, "DELETE FROM contacts WHERE id = 't-nbsp'")


def test_directory_falls_back_to_the_scan(fresh):
    directory = Directory(fresh, rules("US"), index_check_seconds=0)
    result = directory.lookup("0330977089")
    assert result.caller.record_id == PATSY
    assert any(line.startswith("scan: the phone index is not used (triggers missing") for line in result.explain)
    index = PhoneIndex(fresh, rules("US"))
    index.install_triggers()
    explain = directory.lookup("0330977089").explain
    assert any("not rebuilt since the triggers were installed" in line for line in explain)
    index.rebuild()
    assert any(line.startswith("index: ") for line in directory.lookup("0330977089").explain)

    cached = Directory(fresh, rules("US"), index_check_seconds=3600)
    assert cached.lookup("0330977089").caller.record_id == PATSY           # ready, and remembered
    index.uninstall_triggers()
    index.drop_table()
    result = cached.lookup("0330977089")
    assert result.caller.record_id == PATSY
    assert any(line.startswith("index unusable") for line in result.explain)
    assert any(line.startswith("scan: the phone index is not used") for line in cached.lookup("0330977089").explain)


def test_a_slow_index_check_never_holds_up_a_lookup(fresh):
    """After the first answer, the readiness check (information_schema.TRIGGERS, which waits
    behind any metadata lock on the server) runs in the background: lookups go on with the
    last answer and take the new one when it comes."""
    index = PhoneIndex(fresh, rules("US"))
    index.install_triggers()
    index.rebuild()
    directory = Directory(fresh, rules("US"), index_check_seconds=0.05)
    assert any(line.startswith("index: ") for line in directory.lookup("0330977089").explain)
    slow, answer = directory.index.status, Event()
    # The check answers only when the test says: a lookup held up by it could not end first
    # (a "< 1 s" bound here failed on a loaded box; this needs no clock).
    directory.index.status = lambda: (answer.wait(), (False, "checked late"))[1]
    gevent.sleep(0.1)
    result = directory.lookup("0330977089")
    assert directory._rechecking is not None and not answer.is_set()       # the check is still waiting
    assert result.caller.record_id == PATSY
    assert any(line.startswith("index: ") for line in result.explain)      # the last answer
    answer.set()
    wait_for(lambda: directory._index_state[1] == "checked late", timeout=5)
    assert any("checked late" in line for line in directory.lookup("0330977089").explain)
    directory.index.status = slow


def test_sqlite_directory_scans(tmp_path):
    from crmsync.demo import create_demo_db

    engine = make_engine(create_demo_db(tmp_path / "demo.sqlite"))
    result = Directory(engine, rules("DE", [CONTACTS, ACCOUNTS])).lookup("+49 30 111111")
    assert result.caller.name == 'Anna O\'Neil "Annie"'
    assert any(line.startswith("scan: the phone index is not used (needs MariaDB or MySQL")
               for line in result.explain)


MODULES = {"Contacts": CONTACTS, "Accounts": ACCOUNTS, "Leads": LEADS}


@st.composite
def crm_records(draw):
    """A few numbers of one region, each written several ways in random columns of random modules."""
    region = draw(st.sampled_from(sorted(REGIONS)))
    bases = draw(st.lists(numbers(regions=(region,)), min_size=1, max_size=3, unique=True))
    records = []
    for n in range(draw(st.integers(1, 5))):
        module = MODULES[draw(st.sampled_from(sorted(MODULES)))]
        fields = draw(st.lists(st.sampled_from(module.phone_fields), min_size=1, max_size=3, unique=True))
        values = {}
        for field in fields:
            value = draw(written(draw(st.sampled_from(bases))))
            if draw(st.booleans()):      # the local part only, as people store it
                value = value[-9:]
            values[field] = value + draw(st.sampled_from(["", "", " доб. 12", " x12", " ext 7", "#3"]))
        records.append((module, "h-%d" % n, int(draw(st.integers(0, 4)) == 0), values,
                        "2026-0%d-01 00:00:00" % draw(st.integers(1, 3))))
    callers = [draw(written(base, national_ok=draw(st.booleans()))) for base in bases]
    return region, records, callers


def _ground_truth(engine, caller, region, modules=(CONTACTS, ACCOUNTS, LEADS)):
    """Whether any live record of the configured modules matches, by phone.match over every row."""
    key = phone.parse(caller, region)
    with engine.connect() as conn:
        for spec in modules:
            columns = ", ".join(spec.phone_fields)
            for row in conn.execute(text("SELECT %s FROM %s WHERE deleted = 0" % (columns, spec.table))):
                for value in row:
                    stored = phone.parse(value, region)
                    if stored and phone.match(key, stored, 7, 5):
                        return True
    return False


@settings(max_examples=40, **HYPOTHESIS)
@given(data=crm_records())
def test_property_index_and_scan_give_the_same_result(engine, data):
    region, records, callers = data
    try:
        with engine.begin() as conn:
            for module, record_id, deleted, values, modified in records:
                names = {"last_name": "Hypo"} if module is not ACCOUNTS else {"name": "Hypo"}
                insert(conn, module.table, id=record_id, deleted=deleted, date_modified=modified,
                       assigned_user_id="seed_sally_id", **names, **values)
        for caller in callers:
            indexed, scanned = both(engine, caller, region)
            same(indexed, scanned)
            assert any(line.startswith("index: ") for line in indexed.explain)
            assert (indexed.status == "found") == _ground_truth(engine, caller, region), indexed.explain
    finally:
        with engine.begin() as conn:
            for table in ("contacts", "accounts", "leads"):
                conn.execute(text("DELETE FROM %s WHERE id LIKE 'h-%%'" % table))
    assert not [key for key in index_rows(engine) if key[1].startswith("h-")]


# -- the commands -----------------------------------------------------------------------------

def test_index_commands(crm_url, tmp_path):
    path = tmp_path / "crmagi.ini"
    path.write_text("[crm]\nurl = %s\n[lookup]\ndefault_region = US\n" % crm_url)

    def run(*args):
        return CliRunner().invoke(main, list(args) + ["-c", str(path)], catch_exceptions=False)

    result = run("index", "check")
    assert result.exit_code == 1 and "crmagi_phone_index: table not found" in result.output
    result = run("index", "install")
    assert result.exit_code == 0, result.output
    assert "created crmagi_contacts_ai on contacts" in result.output
    assert "lookups use the index: no" in result.output and "next: crmagi index rebuild" in result.output
    assert "triggers already installed as configured" in run("index", "install").output
    result = run("index", "rebuild")
    assert result.exit_code == 0, result.output
    assert "60 record(s) read, 140 row(s) written, 0 row(s) deleted" in result.output
    assert "lookups use the index: yes" in result.output
    result = run("index", "check")
    assert result.exit_code == 0 and result.output.rstrip().endswith("OK"), result.output

    lookup = run("lookup", "033-097-7089")
    assert lookup.exit_code == 0 and "index: 1 candidate(s)" in lookup.output
    assert "status:    found (rule national, phone_work = '(033) 097-7089')" in lookup.output

    engine = create_engine(crm_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE crmagi_phone_index SET digits_rev = '42'"
                          " WHERE record_id = :r AND field = 'phone_work'"), {"r": PATSY})
        conn.execute(text("UPDATE contacts SET phone_home = '+1 212 555 0100' WHERE id = :r"), {"r": PATSY})
    engine.dispose()
    result = run("index", "check")
    assert result.exit_code == 1
    assert "DISAGREE Contacts %s phone_work: digits_rev '42'" % PATSY in result.output
    assert "1 row(s) await e164/national" in result.output
    assert run("index", "rebuild").exit_code == 0
    assert run("index", "check").exit_code == 0
    result = run("index", "uninstall")
    assert result.exit_code == 0 and "dropped crmagi_contacts_ai on contacts" in result.output
    assert "dropped the index tables" in result.output
    lookup = run("lookup", "033-097-7089")
    assert "scan: the phone index is not used" in lookup.output


def test_index_commands_need_mariadb(tmp_path):
    path = tmp_path / "crmagi.ini"
    path.write_text("[crm]\nurl = sqlite:///%s\n" % (tmp_path / "crm.sqlite"))
    for command in ("install", "rebuild", "check", "uninstall"):
        result = CliRunner().invoke(main, ["index", command, "-c", str(path)])
        assert result.exit_code == 1 and "the phone index needs MariaDB or MySQL" in result.output, result.output


def test_json_rows_and_plain_columns_give_the_same_lookups(engine, monkeypatch):
    """On MariaDB the lookup reads each record as one JSON_ARRAY column; its decoding (quotes,
    backslashes, non-ASCII names, NULLs, date_modified for the newest-first tie-break) must give
    exactly what the plain columns give."""
    from crmsync import dialect as dialects

    with engine.begin() as conn:
        contact(conn, "t-json-old", 'Jürgen "Jo"', "O'Brien\\", modified="2025-05-05 10:00:00",
                phone_work="+7 343 555-77-88")
        contact(conn, "t-json-new", "Ёлка", None, modified="2026-02-02 11:12:13", phone_work="8 343 555 77 88")
    numbers = OWN_NUMBERS + SAMPLE_NUMBERS + ["+73435557788"]
    assert dialects.of(engine).json_rows
    packed = Directory(engine, rules("RU"), users_cache_seconds=3600)
    assert packed.lookup("+73435557788").caller.record_id == "t-json-new"     # the newer of the two
    assert packed._index_sql()[0].json
    monkeypatch.setattr(type(dialects.of(engine)), "json_rows", False)
    plain = Directory(engine, rules("RU"), users_cache_seconds=3600)
    assert not plain._index_sql()[0].json
    for number in numbers:
        a, b = packed.lookup(number), plain.lookup(number)
        assert (a.status, a.e164, a.caller, a.explain) == (b.status, b.e164, b.caller, b.explain), number
    with engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET first_name = 'Jürgen \"Jo\"' WHERE id = 't-json-new'"))
    assert packed.lookup("+73435557788").caller.name == plain.lookup("+73435557788").caller.name == 'Jürgen "Jo"'
    execute(engine, "DELETE FROM contacts WHERE id IN ('t-json-old', 't-json-new')")


def test_a_lookup_on_a_transactional_engine_leaves_no_transaction_open(crm_url):
    """The index lookup runs on the driver's cursor (no SQLAlchemy per-call work), so SQLAlchemy
    never ends what it began: on an engine without autocommit (crmagi serve gives lookups an
    autocommit one, the CLI and these tests do not) the pooled connection kept its REPEATABLE
    READ snapshot -- later lookups saw old names -- and its metadata locks, which hold up any DDL
    on the searched tables.  Found as a CI failure of the JSON-rows test above."""
    engine, other = make_engine(crm_url, pool_size=1), make_engine(crm_url, pool_size=1, read_only=True)
    try:
        _lookups_see_new_rows(engine, other)
    finally:          # an open transaction would hold the fixture's DROP DATABASE for ever
        other.dispose()
        engine.dispose()


def _lookups_see_new_rows(engine, other):
    add_and_index(engine)
    directory = Directory(engine, rules(), users_cache_seconds=3600)
    assert directory.lookup("+7 (499) 123-45-67").caller.name == "Ivan Petrov"
    with other.connect() as conn:
        conn.exec_driver_sql("UPDATE contacts SET first_name = 'Iwan' WHERE id = 'c-ivan'")
    assert directory.lookup("+7 (499) 123-45-67").caller.name == "Iwan Petrov"
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver.get_autocommit() is False
        cursor = driver.cursor()
        cursor.execute("SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = "
                       "CONNECTION_ID()")
        assert cursor.fetchone()[0] == 0
        cursor.close()


def _ranges_estimated(engine, read, number):
    """{table: the indexes MariaDB's optimizer estimated a range of} for the lookup of ``number``
    as ``read`` runs it (its optimizer trace: each is a dive into that B-tree, per lookup)."""
    import json

    tail = phone.suffix(phone.parse(number, "RU"), 7)[::-1] + "%"
    estimated = {}
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute("SET optimizer_trace = 'enabled=on'")
        read.rows(conn.connection, cursor, tail)
        cursor.execute("SELECT trace FROM information_schema.optimizer_trace")
        trace = json.loads(cursor.fetchone()[0])
        cursor.execute("SET optimizer_trace = 'enabled=off'")
        cursor.close()

    def walk(node):
        if isinstance(node, dict):
            if "table" in node and "range_analysis" in node:
                alternatives = node["range_analysis"].get("analyzing_range_alternatives", {})
                found = {alt["index"] for alt in alternatives.get("range_scan_alternatives", ())}
                estimated.setdefault(node["table"], set()).update(found)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(trace)
    return estimated


def test_the_lookup_estimates_only_the_digits_range(engine):
    """The index lookup names its indexes (FORCE INDEX): MariaDB would otherwise estimate, on
    every lookup, the range of each index starting with a column in the WHERE clause --
    ``deleted = 0`` of SuiteCRM's idx_contacts_del_last, idx_del_id_user, ... and ``module`` of
    the index table's primary key, each nearly the whole table -- to pick the same plan."""
    from crmsync.prepared import PreparedRead, TextRead

    directory = Directory(engine, rules("RU"), users_cache_seconds=3600)
    assert directory.lookup("+7 (499) 123-45-67").caller.record_id == "c-ivan"
    union, read = directory._index_sql()
    assert isinstance(read, PreparedRead)
    for way in (read, TextRead(read.sql, read.params, "p")):        # as MariaDB runs it, and as text
        estimated = _ranges_estimated(engine, way, "+7 (499) 123-45-67")
        assert estimated, "no range analysis in the optimizer trace"
        assert set().union(*estimated.values()) == {triggers.DIGITS_KEY}, (type(way), estimated)
    assert read.sql.count("FORCE INDEX (PRIMARY)") == 4     # contacts, accounts, leads, the contact's account


def test_a_lookup_without_the_hinted_key_scans_instead_of_failing(fresh):
    """The hints name crmagi_phone_index_digits; a DBA who dropped it gets error 1176 from every
    lookup.  The index is then unusable (the lookup scans), not the CRM unavailable."""
    index = PhoneIndex(fresh, rules("US"))
    index.install_triggers()
    index.rebuild()
    directory = Directory(fresh, rules("US"), index_check_seconds=3600)
    assert any(line.startswith("index: ") for line in directory.lookup("0330977089").explain)
    execute(fresh, "ALTER TABLE %s DROP INDEX %s" % (INDEX_TABLE, triggers.DIGITS_KEY))
    result = directory.lookup("0330977089")
    assert result.caller.record_id == PATSY
    assert any(line.startswith("index unusable") and "1176" in line for line in result.explain), result.explain
