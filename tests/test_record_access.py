"""crmsync.access.RecordAccess and the popup it shapes, on the real SuiteCRM 7.14.6 schema in MariaDB.

Roles and security groups are written as SuiteCRM stores them (tests/acl_rows.py); the
peer test (test_acl_peer.py) checks that the real SuiteCRM agrees on the same kind of rows.
"""
import re
from html.parser import HTMLParser

import pytest
import acl_rows
from acl_rows import ALL, GROUP, NONE, OWNER
from crmsync.access import RecordAccess
from crmsync.db import make_engine
from crmsync.directory import Directory
from crmsync.history import History
from crmsync.models import Caller, LookupResult, LookupRules, ModuleSpec, User
from webpush.callinfo import CallInfo
from webpush.content import PopupContent

CONTACTS = ModuleSpec("Contacts", "contacts", ("phone_work",), link_table="calls_contacts",
                      link_column="contact_id")
ACCOUNTS = ModuleSpec("Accounts", "accounts", ("phone_office",))
RULES = LookupRules(modules=(CONTACTS, ACCOUNTS), default_region="US")
SALLY, CHRIS, WILL, MAX, JIM, SARAH, ADMIN = ("seed_sally_id", "seed_chris_id", "seed_will_id", "seed_max_id",
                                              "seed_jim_id", "seed_sarah_id", "1")


class Db:
    def __init__(self, engine):
        self.engine = engine

    def __call__(self, statement, *args):
        with self.engine.begin() as conn:
            result = conn.exec_driver_sql(statement, args or None)
            return result.fetchall() if result.returns_rows else []


def insert(sql, table, **values):
    sql("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(values), ", ".join(["%s"] * len(values))),
        *values.values())


@pytest.fixture(scope="module")
def sql(crm_url_module):
    engine = make_engine(crm_url_module, pool_size=5)
    db = Db(engine)
    for module in ("Contacts", "Accounts", "Calls"):
        acl_rows.add_module_actions(db, module)
    for rid, first, owner, creator, phone in (
            ("c-sally", "Ann", SALLY, "1", "+1 650 253 0001"),
            ("c-nobody", "Nina", "", WILL, "+1 650 253 0002"),       # unassigned: its creator owns it
            ("c-group", "Gus", SARAH, "1", "+1 650 253 0003")):
        insert(db, "contacts", id=rid, first_name=first, last_name="Smith", assigned_user_id=owner,
               created_by=creator, deleted=0, phone_work=phone)
    insert(db, "accounts", id="a-sally", name="Acme", assigned_user_id=SALLY, deleted=0)
    no_contacts = acl_rows.role(db, "No contacts", "Contacts", view=NONE)
    for user in (SALLY, ADMIN):
        acl_rows.give_role(db, no_contacts, user)
    acl_rows.give_role(db, acl_rows.role(db, "Group contacts", "Contacts", view=GROUP), CHRIS)
    acl_rows.give_role(db, acl_rows.role(db, "Own contacts", "Contacts", view=OWNER), WILL)
    acl_rows.group(db, "Team Gus", users=[CHRIS], records=[("Contacts", "c-group")])
    # Sarah's only role comes through a group; Jim's group role is overridden by a role of his own
    # that leaves Contacts "Not Set" (securitysuite_user_role_precedence).
    acl_rows.group(db, "Blind", users=[SARAH, JIM], roles=[no_contacts])
    acl_rows.give_role(db, acl_rows.role(db, "Accounts only", "Accounts", view=ALL), JIM)
    yield db
    engine.dispose()


@pytest.mark.parametrize("user, record, allowed", [
    (SALLY, "c-sally", False),       # a role denies viewing Contacts: not even her own
    (ADMIN, "c-sally", True),        # an admin sees everything, whatever the role says
    (MAX, "c-sally", True),          # no role: the defaults (view All)
    (CHRIS, "c-group", True),        # view Group: the record is in one of his groups
    (CHRIS, "c-sally", False),       # ... this one is not, and is not his
    (WILL, "c-nobody", True),        # view Owner: he created the unassigned record
    (WILL, "c-group", False),
    (SARAH, "c-group", False),       # a group's role denies it, though she is the assigned user
    (JIM, "c-sally", True),          # his own role takes precedence over his group's
    ("no-such-user", "c-sally", False),
])
def test_can_view_contacts(sql, user, record, allowed):
    assert RecordAccess(sql.engine).can_view(user, "Contacts", "contacts", record) is allowed


def test_other_modules_follow_their_own_actions(sql):
    access = RecordAccess(sql.engine)
    assert access.can_view(SALLY, "Accounts", "accounts", "a-sally")     # her role only touches Contacts
    assert access.can_view(SALLY, "Projects_X", "project", "p-1")        # no acl_actions: no ACL


def test_without_precedence_the_group_role_counts_and_additive_off_takes_the_least(sql):
    assert not RecordAccess(sql.engine, user_role_precedence=False).can_view(JIM, "Contacts", "contacts", "c-sally")
    strict = RecordAccess(sql.engine, additive=False)
    assert strict.can_view(MAX, "Contacts", "contacts", "c-sally")


def test_an_inactive_user_sees_nothing(sql):
    sql("UPDATE users SET status = 'Inactive' WHERE id = %s", MAX)
    try:
        assert not RecordAccess(sql.engine).can_view(MAX, "Contacts", "contacts", "c-sally")
    finally:
        sql("UPDATE users SET status = 'Active' WHERE id = %s", MAX)


# -- the popup -------------------------------------------------------------------------------------

class Text(HTMLParser):
    def __init__(self, html):
        super().__init__()
        self.classes, self.text = [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.classes.extend((dict(attrs).get("class") or "").split())
        self.text.extend(value for _, value in attrs if value)

    def handle_data(self, data):
        self.text.append(data)


def user(user_id, name, ext):
    return User(user_id, name, name.title(), ext)


def found(record="c-sally", name="Ann Smith"):
    caller = Caller("Contacts", record, name, "Acme", user(SALLY, "sally", "101"), "phone_work",
                    "+1 650 253 0001", "e164")
    return LookupResult("found", "+16502530001", "+16502530001", caller)


@pytest.fixture
def content(sql):
    for uid, ext in ((SALLY, "101"), (CHRIS, "104"), (MAX, "102")):
        sql("UPDATE users SET phone_work = %s WHERE id = %s", ext, uid)
    return PopupContent(Directory(sql.engine, RULES), History(sql.engine), access=RecordAccess(sql.engine))


def test_a_user_who_may_not_view_the_record_gets_the_module_and_nothing_of_it(content):
    out = content.render(CallInfo("call-r1", "l", "+16502530001", result=found()), for_user=user(SALLY, "sally", "101"))
    page = Text(out.html)
    words = " ".join(page.text)
    assert "crmagi-restricted" in page.classes and "Contacts" in words and "a record you cannot open" in words
    for secret in ("Ann", "Smith", "Acme", "c-sally", "History"):
        assert secret not in words, secret
    assert "crmagi-history" not in page.classes and "crmagi-record-link" not in page.classes
    assert "crmagi-edit-call" in page.classes and "crmagi-phonebook" in page.classes   # the call still works
    assert (out.title, out.notify) == ("Call from +1 650-253-0001",
                                       "+1 650-253-0001 — a record you cannot open (Contacts)")


def test_a_user_who_may_view_it_gets_the_record(content):
    out = content.render(CallInfo("call-r2", "l", "+16502530001", result=found()), for_user=user(MAX, "max", "102"))
    page = Text(out.html)
    assert "crmagi-known" in page.classes and "Ann Smith" in page.text and "crmagi-history" in page.classes
    assert out.title == "Call from Ann Smith"


def test_the_decision_is_kept_for_the_call_and_asked_again_for_the_next(sql, content):
    sally = user(SALLY, "sally", "101")
    assert "crmagi-restricted" in Text(content.render(CallInfo("call-r3", "l", "+16502530001", result=found()),
                                                      for_user=sally).html).classes
    sql("UPDATE acl_roles_users SET deleted = 1 WHERE user_id = %s", SALLY)
    try:
        again = content.render(CallInfo("call-r3", "l", "+16502530001", result=found()), for_user=sally)
        assert "crmagi-restricted" in Text(again.html).classes       # the same call: not asked again
        later = content.render(CallInfo("call-r4", "l", "+16502530001", result=found()), for_user=sally)
        assert "crmagi-known" in Text(later.html).classes
    finally:
        sql("UPDATE acl_roles_users SET deleted = 0 WHERE user_id = %s", SALLY)


def test_a_crm_that_cannot_tell_shows_nothing_of_the_record_until_it_can(sql, content):
    working = content.access
    content.access = RecordAccess(make_engine("mysql+pymysql://root@127.0.0.1:1/x", connect_timeout=1,
                                              query_timeout=1))
    call, max_ = CallInfo("call-r5", "l", "+16502530001", result=found()), user(MAX, "max", "102")
    assert "crmagi-restricted" in Text(content.render(call, for_user=max_).html).classes
    content.access = working                # back: the failure was not kept for the call
    assert "crmagi-known" in Text(content.render(call, for_user=max_).html).classes


def test_the_phone_book_lists_active_people_and_not_the_user_themself(sql, content):
    for uid, name, flags in (("u-group", "support", "is_group = 1"), ("u-portal", "portal", "portal_only = 1"),
                             ("u-gone", "gone", "status = 'Inactive'"), ("u-deleted", "deleted", "deleted = 1"),
                             ("u-bob", "bob", "deleted = 0")):
        insert(sql, "users", id=uid, user_name=name, last_name=name.title(), status="Active", deleted=0,
               is_group=0, portal_only=0, phone_work="2%02d" % len(name))
        sql("UPDATE users SET %s WHERE id = %%s" % flags, uid)
    content.directory = Directory(sql.engine, RULES)
    out = content.render(CallInfo("call-r6", "l", "+16502530001", result=found()), for_user=user(MAX, "max", "102"))
    rows = re.findall(r'data-crmagi-staff="([^"]*)"', out.html)
    assert [row.split()[0] for row in rows] == ["bob", "chris", "sally"]


def test_sql_helpers_write_rows_suitecrm_reads(sql):
    """The role rows name real actions of the module (what SuiteCRM's role editor writes)."""
    rows = sql("SELECT a.category, a.name, ra.access_override FROM acl_roles r"
               " JOIN acl_roles_actions ra ON ra.role_id = r.id JOIN acl_actions a ON a.id = ra.action_id"
               " WHERE r.name = 'No contacts'")
    assert rows == [("Contacts", "view", NONE)]
