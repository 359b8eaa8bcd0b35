"""crmsync.directory against a real MariaDB with the SuiteCRM 7.14.6 schema and sample rows."""
import gevent
import pymysql
import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url

from crmsync.db import CrmUnavailable, SchemaError, make_engine
from crmsync.directory import Directory
from crmsync.models import LookupRules, ModuleSpec, User

PHONES = ("phone_work", "phone_mobile", "phone_home", "phone_other", "assistant_phone")
CONTACTS = ModuleSpec("Contacts", "contacts", PHONES, link_table="calls_contacts", link_column="contact_id")
ACCOUNTS = ModuleSpec("Accounts", "accounts", ("phone_office", "phone_alternate"))
LEADS = ModuleSpec("Leads", "leads", PHONES, link_table="calls_leads", link_column="lead_id")

PATSY = "13ca4a4c-562d-57d3-c959-6b082d7b086f"          # sample data: contact of B.H. Edwards Inc
CHRIS = User(id="seed_chris_id", user_name="chris", full_name="Chris Olliver", extension=None)
SALLY = User(id="seed_sally_id", user_name="sally", full_name="Sally Bronsen", extension="101")
WILL = User(id="seed_will_id", user_name="will", full_name="Will Westin", extension="102")


def rules(region="RU", modules=(CONTACTS, ACCOUNTS, LEADS), **kwargs):
    return LookupRules(modules=tuple(modules), default_region=region, **kwargs)


def insert(conn, table, **values):
    conn.execute(text("INSERT INTO %s (%s) VALUES (%s)" % (
        table, ", ".join(values), ", ".join(":" + key for key in values))), values)


def contact(conn, cid, first, last, owner="seed_sally_id", modified="2026-01-01 10:00:00", deleted=0, **phones):
    insert(conn, "contacts", id=cid, first_name=first, last_name=last, assigned_user_id=owner,
           date_entered=modified, date_modified=modified, deleted=deleted, **phones)


def account(conn, aid, name, owner="seed_will_id", deleted=0, **phones):
    insert(conn, "accounts", id=aid, name=name, assigned_user_id=owner, deleted=deleted,
           date_entered="2026-01-01", date_modified="2026-01-01", **phones)


def link(conn, contact_id, account_id, deleted=0):
    insert(conn, "accounts_contacts", id="ac-%s-%s" % (contact_id, account_id), contact_id=contact_id,
           account_id=account_id, date_modified="2026-01-01", deleted=deleted)


def add_rows(conn):
    """Our own rows: E.164, RU and DE formats, the same number in several places, deleted records."""
    conn.execute(text("UPDATE users SET phone_work='101' WHERE id='seed_sally_id'"))
    conn.execute(text("UPDATE users SET phone_work='10-2' WHERE id='seed_will_id'"))
    conn.execute(text("UPDATE users SET phone_work='+7 499 000-00-00' WHERE id='seed_max_id'"))
    conn.execute(text("UPDATE users SET phone_work='103', status='Inactive' WHERE id='seed_jim_id'"))
    insert(conn, "users", id="gone", user_name="gone", last_name="Gone", status="Active", deleted=1,
           phone_work="104")

    contact(conn, "c-ivan", "Ivan", "Petrov", phone_work="8 (499) 123-45-67")
    for aid, name, deleted in (("a-zeta", "Zeta Trading", 0), ("a-alpha", "Alpha Holding", 0),
                               ("a-aardvark", "Aardvark (unlinked)", 0), ("a-aaa", "AAA (deleted)", 1)):
        account(conn, aid, name, deleted=deleted)
        link(conn, "c-ivan", aid, deleted=int(aid == "a-aardvark"))
    contact(conn, "c-local", "Olga", "Local", owner="seed_max_id", phone_mobile="123-45-68")

    # +7 495 765-43-21 in three modules and two contacts.
    account(conn, "a-n1", "Same Number LLC", phone_office="+7 495 765-43-21")
    insert(conn, "leads", id="l-n1", first_name="Lena", last_name="Lead", assigned_user_id="seed_sally_id",
           account_name="Lead Co", deleted=0, date_modified="2026-01-01", phone_work="84957654321")
    contact(conn, "c-n1-home", "Hanna", "Home", phone_home="(495) 765 43 21")
    contact(conn, "c-n1-tail", "Tanja", "Tail", modified="2026-06-01", phone_work="765-43-21")
    # Tie-breaks: column order, then date_modified, then id.
    contact(conn, "c-n2-work", "Walter", "Work", modified="2025-01-01", phone_work="8 812 555 12 34")
    contact(conn, "c-n2-mobile", "Mona", "Mobile", modified="2026-06-01", phone_mobile="+78125551234")
    contact(conn, "c-n3-old", "Otto", "Old", modified="2025-01-01", phone_mobile="+7 903 111-22-33")
    contact(conn, "c-n3-new", "Nina", "New", modified="2026-06-01", phone_mobile="8 903 111 22 33")
    contact(conn, "c-n4-b", "Bert", "B", phone_work="+7 916 444-55-66")
    contact(conn, "c-n4-a", "Anja", "A", phone_work="+7 916 444-55-66")
    # Deleted records never match.
    contact(conn, "c-n5-deleted", "Dora", "Deleted", deleted=1, phone_work="+7 343 555-00-11")
    account(conn, "a-n5", "Alive Account", phone_alternate="8 343 555 00 11")
    contact(conn, "c-n6-deleted", "Dina", "Deleted", deleted=1, phone_work="+7 343 555-00-66")

    contact(conn, "c-de", "Klaus", "Berliner", owner="seed_will_id", phone_work="+49 30 12345678")
    contact(conn, "c-de0", "Dora", "Düsseldorf", owner="seed_will_id", phone_mobile="+49 (0)211 3696525")
    contact(conn, "c-jim", "Jim's", "Customer", owner="seed_jim_id", phone_work="+7 495 999-88-77")
    contact(conn, "c-quote", "Anna", 'O\'Neil "Annie"', phone_work="+7 495 222-33-44")
    contact(conn, "c-ext", "Short", "Number", phone_work="1234")


@pytest.fixture(scope="module")
def engine(crm_url_module):
    engine = make_engine(crm_url_module, pool_size=5)
    with engine.begin() as conn:
        add_rows(conn)
    yield engine
    engine.dispose()


def found(result):
    assert result.status == "found", result.explain
    return result.caller


# -- the SuiteCRM sample data ---------------------------------------------------------------

def test_sample_contact_by_national_number(engine):
    result = Directory(engine, rules("US")).lookup("0330977089")
    caller = found(result)
    assert (caller.module, caller.record_id, caller.name) == ("Contacts", PATSY, "Patsy Beauchesne")
    assert caller.account_name == "B.H. Edwards Inc"
    assert caller.owner == CHRIS
    assert (caller.column, caller.stored_number, caller.rule) == ("phone_work", "(033) 097-7089", "national")
    assert result.e164 is None          # area code 033 does not exist: no E.164 form
    assert any("matches by national" in line for line in result.explain)


def test_sample_contact_mobile_by_e164(engine):
    result = Directory(engine, rules("US")).lookup("+1 725-235-6325")
    caller = found(result)
    assert (caller.record_id, caller.column, caller.rule) == (PATSY, "phone_mobile", "e164")
    assert result.e164 == "+17252356325"


def test_sample_account_and_lead(engine):
    directory = Directory(engine, rules("US"))
    caller = found(directory.lookup("18177308298"))
    assert (caller.module, caller.record_id, caller.name, caller.account_name) == (
        "Accounts", "119ac1e3-ba6a-c29a-96f3-6b082dc51bd6", "B.H. Edwards Inc", None)
    assert caller.owner.id == "seed_max_id"
    caller = found(directory.lookup("800 967 1456"))
    assert (caller.module, caller.record_id, caller.name, caller.account_name) == (
        "Leads", "2bc44572-ccc0-18dd-da87-6b082d17929f", "Myrna Barkman", "Rhyme & Reason Inc")
    assert caller.owner == WILL


def test_custom_name_fields(engine):
    spec = ModuleSpec("Contacts", "contacts", PHONES, name_fields=("last_name", "first_name"))
    assert found(Directory(engine, rules("US", [spec])).lookup("0330977089")).name == "Beauchesne Patsy"


# -- formats --------------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["+74991234567", "74991234567", "84991234567", "4991234567",
                                    "+7 (499) 123-45-67", "8-499-123-45-67"])
def test_ru_formats_find_the_same_contact(engine, number):
    result = Directory(engine, rules("RU")).lookup(number)
    caller = found(result)
    assert (caller.record_id, caller.name, caller.rule) == ("c-ivan", "Ivan Petrov", "e164")
    assert caller.account_name == "Alpha Holding"      # first by name; deleted link and account skipped
    assert caller.owner == SALLY
    assert result.e164 == "+74991234567"


def test_number_stored_without_city_code_matches_by_suffix(engine):
    result = Directory(engine, rules("RU")).lookup("+7 495 123-45-68")
    caller = found(result)
    assert (caller.record_id, caller.column, caller.rule) == ("c-local", "phone_mobile", "suffix")
    # Max's phone_work is a full number, not an extension: dropped, and said so.
    assert caller.owner == User("seed_max_id", "max", "Max Jensen", None)
    assert any("not an extension" in line and "+7 499 000-00-00" in line for line in result.explain)


@pytest.mark.parametrize("region, number, rule", [
    ("DE", "030 12345678", "e164"), ("DE", "0049 30 12345678", "e164"), ("DE", "+49 (30) 1234-5678", "e164"),
    ("RU", "+493012345678", "e164"), ("US", "493012345678", "suffix"), ("US", "+49 30 12345678", "e164"),
])
def test_de_formats(engine, region, number, rule):
    caller = found(Directory(engine, rules(region)).lookup(number))
    assert (caller.record_id, caller.name, caller.owner, caller.rule) == ("c-de", "Klaus Berliner", WILL, rule)


def test_a_bare_country_code_caller_finds_a_number_typed_with_its_trunk_zero(engine):
    """A trunk delivering callers as 49… (no +) and a CRM with "+49 (0)211 …": the typed "(0)"
    is no digit of the number.  Before, every such caller was unknown (bench/lookup_compare.py:
    the 11 of 5,000 "missed", 52 of 20,000 sample callers of the 20k database)."""
    caller = found(Directory(engine, rules("DE")).lookup("492113696525"))
    assert (caller.record_id, caller.column, caller.rule) == ("c-de0", "phone_mobile", "suffix")


# -- which record wins --------------------------------------------------------------------

@pytest.mark.parametrize("modules, module, record_id, rule", [
    ((CONTACTS, ACCOUNTS, LEADS), "Contacts", "c-n1-home", "e164"),    # e164 beats an earlier, newer column
    ((ACCOUNTS, CONTACTS, LEADS), "Accounts", "a-n1", "e164"),
    ((LEADS, ACCOUNTS, CONTACTS), "Leads", "l-n1", "e164"),
])
def test_first_module_with_a_match_wins(engine, modules, module, record_id, rule):
    result = Directory(engine, rules("RU", modules)).lookup("+74957654321")
    caller = found(result)
    assert (caller.module, caller.record_id, caller.rule) == (module, record_id, rule)
    assert sum(line.startswith(("Contacts:", "Accounts:", "Leads:")) for line in result.explain) == 1


def test_lead_account_name_comes_from_its_column(engine):
    caller = found(Directory(engine, rules("RU", [LEADS])).lookup("+74957654321"))
    assert (caller.name, caller.account_name, caller.owner) == ("Lena Lead", "Lead Co", SALLY)


@pytest.mark.parametrize("number, winner", [
    ("+78125551234", "c-n2-work"),        # phone_work before phone_mobile, although older
    ("+79031112233", "c-n3-new"),         # same column: most recent date_modified
    ("+79164445566", "c-n4-a"),           # same date: smallest id
])
def test_tie_break(engine, number, winner):
    result = Directory(engine, rules("RU")).lookup(number)
    assert found(result).record_id == winner
    assert any("lost the tie-break" in line for line in result.explain)


def test_deleted_records_never_match(engine):
    directory = Directory(engine, rules("RU"))
    caller = found(directory.lookup("+73435550011"))
    assert (caller.module, caller.record_id, caller.column) == ("Accounts", "a-n5", "phone_alternate")
    assert caller.name == "Alive Account"
    assert directory.lookup("+73435550066").status == "unknown"


def test_owner_must_be_an_active_user(engine):
    result = Directory(engine, rules("RU")).lookup("+74959998877")
    assert found(result).owner is None
    assert any("seed_jim_id is not an active user" in line for line in result.explain)


def test_names_with_quotes(engine):
    assert found(Directory(engine, rules("RU")).lookup("+74952223344")).name == 'Anna O\'Neil "Annie"'


# -- statuses -------------------------------------------------------------------------------

@pytest.mark.parametrize("number, status", [
    ("", "anonymous"), ("anonymous", "anonymous"), ("<unknown>", "anonymous"), ("Restricted", "anonymous"),
    ("1234", "internal"), ("101", "internal"), ("+7 999 000-00-00", "unknown"), ("+74950001234", "unknown"),
])
def test_statuses(engine, number, status):
    result = Directory(engine, rules("RU")).lookup(number)
    assert (result.status, result.caller) == (status, None)
    assert result.explain
    if status == "unknown":
        assert result.explain[-1] == "no match in Contacts, Accounts, Leads"


def test_caller_ids_with_sql_in_them_are_harmless(engine):
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    directory = Directory(engine, rules("RU"))
    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert directory.lookup("'; DROP TABLE contacts;--").status == "anonymous"
        assert directory.lookup("Robert'); DROP TABLE accounts;--").status == "anonymous"
        result = directory.lookup("4991234567' --")          # digits and quotes, no letters
        assert found(result).record_id == "c-ivan"
        assert directory.lookup('"+7 (495) 000-00-00"; --').status == "unknown"
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    sql = " ".join(statement for statement, _ in statements)
    assert "DROP" not in sql and "--" not in sql and "4991234567" not in sql and "0000" not in sql
    patterns = [parameters["p"] for statement, parameters in statements if "LIKE" in statement]
    # Bound, and one query per module searched (the first lookup stops at Contacts).
    assert patterns == ["%1234567%"] + ["%0000000%"] * 3
    tables = set(inspect(engine).get_table_names())
    assert {"contacts", "accounts", "leads", "users"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM contacts")).scalar() == 20 + 17


# -- users ----------------------------------------------------------------------------------

def test_users_and_extensions_from_phone_work(engine):
    directory = Directory(engine, rules("RU"))
    assert directory.user("seed_sally_id") == SALLY
    assert directory.user("seed_will_id") == WILL            # "10-2" stripped of its dash
    assert directory.user("seed_max_id").extension is None   # a full number is no extension
    assert directory.user("seed_jim_id") is None             # inactive
    assert directory.user("gone") is None                    # deleted
    assert directory.user("1") == User("1", "admin", "Administrator", None)
    assert directory.user_by_extension("101") == SALLY
    assert directory.user_by_extension("102") == WILL
    assert directory.user_by_extension("103") is None        # jim is inactive
    assert directory.user_by_extension("104") is None        # deleted user
    assert directory.user_by_extension("74990000000") is None
    assert directory.user_by_extension("") is None


def test_extension_in_users_cstm(crm_url):
    """The field as SuiteCRM Studio creates it (suitecrm.md section 8)."""
    engine = make_engine(crm_url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users_cstm (id_c char(36) NOT NULL, asterisk_ext_c varchar(20) DEFAULT NULL,"
                          " PRIMARY KEY (id_c)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3"))
        insert(conn, "fields_meta_data", id="Usersasterisk_ext_c", name="asterisk_ext_c", vname="LBL_ASTERISK_EXT",
               custom_module="Users", type="varchar", len=20, deleted=0, reportable=1,
               date_modified="2026-01-01 00:00:00")
        insert(conn, "users_cstm", id_c="seed_chris_id", asterisk_ext_c="201")
        insert(conn, "users_cstm", id_c="seed_sally_id", asterisk_ext_c="8 (499) 123-45-67")
        conn.execute(text("UPDATE users SET phone_work='999' WHERE id='seed_chris_id'"))
    try:
        directory = Directory(engine, rules("US", extension_field="asterisk_ext_c"), users_cache_seconds=3600)
        assert directory.problems() == []
        result = directory.lookup("0330977089")
        assert found(result).owner == User("seed_chris_id", "chris", "Chris Olliver", "201")
        assert directory.user_by_extension("201").id == "seed_chris_id"
        assert directory.user_by_extension("999") is None       # phone_work is not the field
        assert directory.user("seed_sally_id").extension is None
        assert directory.user("seed_will_id").extension is None  # no users_cstm row: NULL

        with engine.begin() as conn:
            conn.execute(text("UPDATE users_cstm SET asterisk_ext_c='202' WHERE id_c='seed_chris_id'"))
        assert directory.user_by_extension("201").id == "seed_chris_id"    # cached
        fresh = Directory(engine, rules("US", extension_field="asterisk_ext_c"), users_cache_seconds=0.2)
        assert fresh.user_by_extension("202").id == "seed_chris_id"
        with engine.begin() as conn:
            conn.execute(text("UPDATE users_cstm SET asterisk_ext_c='203' WHERE id_c='seed_chris_id'"))
        gevent.sleep(0.3)
        assert fresh.user_by_extension("203").id == "seed_chris_id"         # refreshed

        # The database goes away: the users loaded before are kept.
        fresh.engine = make_engine("mysql+pymysql://root@127.0.0.1:1/none", connect_timeout=1)
        gevent.sleep(0.3)
        assert fresh.user("seed_chris_id").extension == "203"
    finally:
        engine.dispose()


# -- schema and availability ------------------------------------------------------------

def test_problems_name_every_missing_column(engine):
    contacts = ModuleSpec("Contacts", "contacts", ("phone_work", "phone_bogus"), name_fields=("first_name", "nick_c"))
    things = ModuleSpec("Things", "crmagi_things", ("phone",))
    directory = Directory(engine, rules("RU", [contacts, ACCOUNTS, things], extension_field="asterisk_ext_c"))
    assert directory.problems() == [
        "contacts.nick_c: column not found",
        "contacts.phone_bogus: column not found",
        "crmagi_things: table not found in the CRM database",
        "users_cstm.asterisk_ext_c: not a users column, and there is no users_cstm table",
    ]
    with pytest.raises(SchemaError, match="contacts.phone_bogus"):
        directory.lookup("+74991234567")
    assert Directory(engine, rules("RU")).problems() == []


def test_unreachable_database_raises_crm_unavailable():
    dead = make_engine("mysql+pymysql://root@127.0.0.1:1/none", connect_timeout=1)
    directory = Directory(dead, rules("RU"))
    with pytest.raises(CrmUnavailable) as info:
        directory.lookup("+74991234567")
    assert info.value.__cause__ is not None
    with pytest.raises(CrmUnavailable):
        directory.user_by_extension("101")
    assert directory.lookup("anonymous").status == "anonymous"   # no database needed


def test_query_timeout_raises_crm_unavailable_then_recovers(crm_url):
    engine = make_engine(crm_url, pool_size=2, query_timeout=1)
    directory = Directory(engine, rules("US"))
    assert directory.problems() == []
    url = make_url(crm_url)
    locker = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, database=url.database)
    try:
        locker.cursor().execute("LOCK TABLES contacts WRITE")
        with pytest.raises(CrmUnavailable) as info:
            directory.lookup("0330977089")
        assert info.value.__cause__ is not None
        locker.cursor().execute("UNLOCK TABLES")
        assert found(directory.lookup("0330977089")).record_id == PATSY
    finally:
        locker.close()
        engine.dispose()
