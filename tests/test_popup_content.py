"""crmsync.history + webpush.content against the real SuiteCRM 7.14.6 schema; the HTML is checked parsed."""
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest
from jinja2 import UndefinedError
from sqlalchemy import text

from crmsync.db import CrmUnavailable, make_engine
from crmsync.directory import Directory
from crmsync.history import History
from crmsync.models import Caller, HistoryItem, LookupResult, LookupRules, ModuleSpec, User
from webpush.callinfo import CallInfo
from webpush.content import TEMPLATE, PopupContent, environment

CONTACTS = ModuleSpec("Contacts", "contacts", ("phone_work",), link_table="calls_contacts",
                      link_column="contact_id")
RULES = LookupRules(modules=(CONTACTS,), default_region="US")
ANN, LENA, ACME = "c-ann", "l-lena", "a-acme"
EVIL = '<img src=x onerror=alert(1)>"><script>alert(2)</script>'
SALLY = User("seed_sally_id", "sally", "Sally Bronsen", "101")
WILL = User("seed_will_id", "will", "Will Westin", "102")


def insert(conn, table, **values):
    conn.execute(text("INSERT INTO %s (%s) VALUES (%s)" % (
        table, ", ".join(values), ", ".join(":" + key for key in values))), values)


def activity(conn, table, rid, name, when, deleted=0, **values):
    dates = {"date_start": when} if table in ("calls", "meetings") else {}
    insert(conn, table, id=rid, name=name, date_entered=when, date_modified=when, deleted=deleted,
           **dates, **values)


def link(conn, table, deleted=0, **ids):
    insert(conn, table, id="%s-%s" % (table, "-".join(ids.values())), date_modified="2026-01-01",
           deleted=deleted, **ids)


def seed(conn):
    for uid, ext, dept in (("seed_sally_id", "101", "Sales"), ("seed_will_id", "102", "Support"),
                           ("seed_sarah_id", "103", "")):
        conn.execute(text("UPDATE users SET phone_work=:e, department=:d WHERE id=:u"),
                     {"e": ext, "d": dept, "u": uid})
    insert(conn, "contacts", id=ANN, first_name="Ann", last_name="Smith", assigned_user_id="seed_sally_id",
           deleted=0, phone_work="+1 650 253 0000")
    insert(conn, "accounts", id=ACME, name="Acme", deleted=0)
    insert(conn, "leads", id=LENA, first_name="Lena", last_name="Lead", deleted=0)
    parent = {"parent_type": "Contacts", "parent_id": ANN}
    # Calls: by parent + link, by link only, by parent only; a deleted call, a deleted link, the current call.
    activity(conn, "calls", "call-1", "Parent and link", "2026-11-20 09:00:00", status="Held",
             direction="Inbound", **parent)
    link(conn, "calls_contacts", call_id="call-1", contact_id=ANN)
    activity(conn, "calls", "call-2", "Link only", "2026-11-25 10:00:00", status="Not Held", direction="Outbound")
    link(conn, "calls_contacts", call_id="call-2", contact_id=ANN)
    activity(conn, "calls", "call-3", "Parent only", "2026-11-10 08:30:00", status="Held", **parent)
    activity(conn, "calls", "call-deleted", "Deleted call", "2026-11-26 11:00:00", deleted=1, **parent)
    link(conn, "calls_contacts", call_id="call-deleted", contact_id=ANN)
    activity(conn, "calls", "call-unlinked", "Deleted link", "2026-11-26 11:00:00")
    link(conn, "calls_contacts", deleted=1, call_id="call-unlinked", contact_id=ANN)
    activity(conn, "calls", "call-now", "The current call", "2026-11-26 12:00:00", status="Planned", **parent)
    activity(conn, "calls", "call-other", "Someone else", "2026-11-26 12:00:00", parent_type="Contacts",
             parent_id="c-other")
    # SuiteCRM's History of a contact: no call or meeting by parent alone, nothing Planned, no Cases.
    activity(conn, "meetings", "meet-1", "Meeting by parent", "2026-11-22 14:00:00", status="Held", **parent)
    activity(conn, "meetings", "meet-2", "Meeting by link", "2026-11-01 14:00:00", status="Planned")
    link(conn, "meetings_contacts", meeting_id="meet-2", contact_id=ANN)
    activity(conn, "meetings", "meet-3", "Held meeting by link", "2026-11-23 14:00:00", status="Held")
    link(conn, "meetings_contacts", meeting_id="meet-3", contact_id=ANN)
    activity(conn, "tasks", "task-1", "Completed task", "2026-11-01 09:00:00", status="Completed",
             date_due="2026-11-24 09:00:00", **parent)
    activity(conn, "tasks", "task-open", "Open task", "2026-11-26 09:00:00", status="Not Started",
             date_due="2026-11-26 09:00:00", contact_id=ANN)
    activity(conn, "emails", "email-1", EVIL, "2026-11-22 08:00:00", status="archived",
             date_sent_received="2026-11-22 08:00:00")
    link(conn, "emails_beans", email_id="email-1", bean_id=ANN, bean_module="Contacts")
    activity(conn, "emails", "email-other", "Lead email", "2026-11-22 09:00:00", status="archived")
    link(conn, "emails_beans", email_id="email-other", bean_id=ANN, bean_module="Leads")
    activity(conn, "calls", "call-acct", "Account call", "2026-11-21 10:00:00", status="Held",
             parent_type="Accounts", parent_id=ACME)
    activity(conn, "notes", "note-1", "Note by parent", "2026-11-24 16:00:00", **parent)
    activity(conn, "notes", "note-2", "Note by contact_id", "2026-10-01 16:00:00", contact_id=ANN)
    activity(conn, "notes", "note-deleted", "Deleted note", "2026-11-26 16:00:00", deleted=1, **parent)
    activity(conn, "cases", "case-1", EVIL, "2026-11-23 07:00:00", status="Open_New", account_id=ACME)
    link(conn, "contacts_cases", case_id="case-1", contact_id=ANN)
    activity(conn, "cases", "case-unlinked", "Unlinked case", "2026-11-26 07:00:00", status="Open_New")
    link(conn, "contacts_cases", deleted=1, case_id="case-unlinked", contact_id=ANN)
    # Leads and a custom module.
    activity(conn, "calls", "call-lead", "Lead call", "2026-11-21 09:00:00", status="Held")
    link(conn, "calls_leads", call_id="call-lead", lead_id=LENA)
    activity(conn, "meetings", "meet-lead", "Lead meeting", "2026-11-19 09:00:00", parent_type="Leads",
             parent_id=LENA, status="Not Held")
    activity(conn, "calls", "call-custom", "Custom call", "2026-11-18 09:00:00", parent_type="Projects_X",
             parent_id="px-1", status="Held")


ANN_ORDER = ["call-2", "task-1", "meet-3", "email-1", "call-1", "note-2"]


@pytest.fixture(scope="module")
def engine(crm_url_module):
    engine = make_engine(crm_url_module, pool_size=5)
    with engine.begin() as conn:
        seed(conn)
    yield engine
    engine.dispose()


@pytest.fixture
def dead_engine():
    engine = make_engine("mysql+pymysql://root@127.0.0.1:1/nothing", connect_timeout=1, query_timeout=1)
    yield engine
    engine.dispose()


# -- a tiny DOM, from the standard library's parser -------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.parts = tag, dict(attrs), parent, [], []

    @property
    def text(self):
        return " ".join("".join(self._texts()).split())

    def _texts(self):
        for part in self.parts:
            yield from part._texts() if isinstance(part, Node) else [part]

    def iter(self):
        for child in self.children:
            yield child
            yield from child.iter()

    def find_all(self, tag=None, cls=None, **attrs):
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.attrs.get("class", "").split())
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def find(self, tag=None, cls=None, **attrs):
        found = self.find_all(tag, cls, **attrs)
        assert len(found) == 1, (tag, cls, attrs, len(found))
        return found[0]


class Tree(HTMLParser):
    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {})
        self.feed(html)
        self.close()
        assert self.current is self.root, "unclosed <%s>" % self.current.tag

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        self.current.parts.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        assert tag == self.current.tag, "</%s> closes <%s>" % (tag, self.current.tag)
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.parts.append(data)


def parse(html):
    return Tree(html).root


def assert_safe(root):
    """No element or attribute that runs script, whatever the CRM or the network sent."""
    assert not root.find_all("script") and not root.find_all("img")
    for node in root.iter():
        assert not any(name.startswith("on") for name in node.attrs), node.attrs
        for name in ("href", "src"):
            assert not node.attrs.get(name, "").lower().startswith("javascript:")


# -- history -------------------------------------------------------------------------------------

def test_contact_history_newest_first_both_wirings(engine):
    items = History(engine).recent("Contacts", ANN, exclude=("call-now",))
    assert [i.record_id for i in items] == ANN_ORDER
    assert [i.kind for i in items] == ["Call", "Task", "Meeting", "Email", "Call", "Note"]
    first = items[0]
    assert first == HistoryItem("Call", "call-2", "Link only", datetime(2026, 11, 25, 10, tzinfo=timezone.utc),
                                "Not Held", "Outbound", "index.php?module=Calls&action=DetailView&record=call-2")
    assert items[1].url == "index.php?module=Tasks&action=DetailView&record=task-1"
    assert items[1].when == datetime(2026, 11, 24, 9, tzinfo=timezone.utc) and items[1].direction == ""


def test_planned_current_call_is_not_history_and_limit(engine):
    items = History(engine, limit=3).recent("Contacts", ANN)
    assert [i.record_id for i in items] == ["call-2", "task-1", "meet-3"]
    assert [i.record_id for i in History(engine).recent("Contacts", ANN, limit=2, exclude=("call-now",))] == \
        ANN_ORDER[:2]


def test_account_lead_and_custom_module_history(engine):
    assert [i.record_id for i in History(engine).recent("Accounts", ACME)] == ["call-acct"]
    assert [i.record_id for i in History(engine).recent("Leads", LENA)] == ["call-lead", "meet-lead"]
    assert [i.record_id for i in History(engine).recent("Projects_X", "px-1")] == ["call-custom"]
    assert History(engine).recent("Contacts", "nobody") == []


def test_missing_tables_just_remove_that_kind(crm_url):
    engine = make_engine(crm_url, pool_size=2)
    try:
        with engine.begin() as conn:
            seed(conn)
            conn.execute(text("DROP TABLE meetings"))
            conn.execute(text("DROP TABLE emails_beans"))
        items = History(engine).recent("Contacts", ANN, exclude=("call-now",))
        assert [i.record_id for i in items] == [r for r in ANN_ORDER if not r.startswith(("meet", "email"))]
    finally:
        engine.dispose()


def test_history_crm_down_is_crm_unavailable(dead_engine):
    with pytest.raises(CrmUnavailable):
        History(dead_engine).recent("Contacts", ANN)


# -- staff -----------------------------------------------------------------------------------------

def test_staff_active_users_with_extension_sorted(engine):
    staff = Directory(engine, RULES).staff()
    assert [(u.full_name, u.extension, u.department, u.title) for u in staff] == [
        ("Sally Bronsen", "101", "Sales", "Senior Account Rep"),
        ("Sarah Smith", "103", "", "Sales Manager West"),
        ("Will Westin", "102", "Support", "Sales Manager East")]
    assert staff[0] == SALLY        # department and title are display only


# -- rendering -----------------------------------------------------------------------------------

def found(name="Ann Smith", account="Acme", owner=SALLY, record=ANN):
    caller = Caller("Contacts", record, name, account, owner, "phone_work", "+1 650 253 0000", "e164")
    return LookupResult("found", "+16502530000", "+16502530000", caller)


def content(engine, **kwargs):
    return PopupContent(Directory(engine, RULES), History(engine), **kwargs)


def test_known_popup(engine):
    call = CallInfo("call-now", "l-1", "+16502530000", result=found())
    out = content(engine, site_url="https://crm.example.com/").render(call, for_user=WILL)
    root = parse(out.html)
    section = root.find("section", "crmagi-popup")
    assert section.attrs["class"] == "crmagi-popup crmagi-known" and section.attrs["data-crmagi-call"] == "call-now"
    close = root.find("button", "crmagi-close")
    assert (close.attrs["type"], close.attrs["data-crmagi-dismiss"], close.attrs["aria-label"], close.text) == \
        ("button", None, "Close", "×")
    state = root.find("p", "crmagi-state")
    assert "data-crmagi-state" in state.attrs and state.text == ""
    assert root.find("span", "crmagi-number").text == "+1 650-253-0000"
    assert root.find("span", "crmagi-module").text == "Contacts"
    assert root.find("h2", "crmagi-name").text == "Ann Smith"
    assert root.find("p", "crmagi-account").text == "Acme"
    record = "https://crm.example.com/index.php?module=Contacts&action=DetailView&record=c-ann"
    assert root.find("a", "crmagi-record-link").attrs["href"] == record
    full = root.find("a", "crmagi-full-history").attrs
    assert (full["href"], full["target"], full["rel"]) == (record, "_blank", "noopener")
    assert root.find("a", "crmagi-edit-call").attrs["href"] == \
        "https://crm.example.com/index.php?module=Calls&action=EditView&record=call-now"
    owner = root.find("button", "crmagi-transfer-owner")
    assert owner.attrs["data-crmagi-transfer"] == "101" and owner.attrs["type"] == "button"
    items = root.find_all("li", "crmagi-history-item")
    links = [li.find("a").attrs["href"].rsplit("=", 1)[1] for li in items]
    assert links == ANN_ORDER            # newest first, the current call left out
    times = [li.find("time") for li in items]
    # No preference: the site's format ([crm] date_format/time_format, SuiteCRM's m/d/Y H:i) in UTC.
    assert (times[0].attrs["datetime"], times[0].text) == ("2026-11-25T10:00:00Z", "11/25/2026 10:00")
    assert items[3].find("a").text == EVIL     # the email subject, as text
    assert_safe(root)
    assert out.title == "Call from Ann Smith"
    assert out.notify == "+1 650-253-0000 — Ann Smith, Acme (Contacts)"


def test_known_popup_for_the_owner_has_no_transfer_to_owner(engine):
    call = CallInfo("call-now", "l-1", "+16502530000", result=found())
    root = parse(content(engine).render(call, for_user=User("seed_sally_id", "sally", "Sally Bronsen", "101")).html)
    assert not root.find_all(cls="crmagi-transfer-owner")
    assert root.find("span", "crmagi-owner-name").text == "you"
    # Relative URLs without a site_url.
    assert root.find("a", "crmagi-record-link").attrs["href"] == \
        "index.php?module=Contacts&action=DetailView&record=c-ann"
    no_ext = parse(content(engine).render(CallInfo("x", "l", "+16502530000", result=found(
        owner=User("seed_chris_id", "chris", "Chris Olliver", None)))).html)
    assert not no_ext.find_all(cls="crmagi-transfer-owner")


def test_phonebook_rows(engine):
    root = parse(content(engine).render(CallInfo("c", "l", "+16502530000", result=found())).html)
    search = root.find("input", "crmagi-search")
    assert search.attrs["type"] == "search" and "data-crmagi-search" in search.attrs and search.attrs["placeholder"]
    table = root.find("table", "crmagi-phonebook")
    rows = [tr for tr in table.find_all("tr") if "data-crmagi-staff" in tr.attrs]
    assert [tr.attrs["data-crmagi-staff"] for tr in rows] == [
        "sally bronsen 101 sales senior account rep",
        "sarah smith 103 sales manager west",
        "will westin 102 support sales manager east"]
    assert [tr.find("button").attrs["data-crmagi-transfer"] for tr in rows] == ["101", "103", "102"]


def test_hostile_values_render_as_text(engine):
    call = CallInfo(EVIL, "l", EVIL, caller_name=EVIL, result=found(name=EVIL, account=EVIL, record=EVIL))
    out = content(engine).render(call)
    root = parse(out.html)
    assert_safe(root)
    assert root.find("section", "crmagi-popup").attrs["data-crmagi-call"] == EVIL
    assert root.find("h2", "crmagi-name").text == EVIL
    assert root.find("p", "crmagi-account").text == EVIL
    assert root.find("span", "crmagi-number").text == "+1 650-253-0000"
    unknown = parse(content(engine).render(CallInfo("c", "l", EVIL, caller_name=EVIL,
                                                    result=LookupResult("unknown", EVIL))).html)
    assert_safe(unknown)
    assert unknown.find("span", "crmagi-number").text == EVIL
    assert unknown.find("span", "crmagi-cnam-text").text == EVIL


def test_unknown_popup(engine):
    call = CallInfo("call-u", "l", "6502530001", caller_name="ACME CORP\nLINE 2",
                    result=LookupResult("unknown", "6502530001", "+16502530001"))
    out = content(engine, site_url="https://crm.example.com/suite").render(call)
    root = parse(out.html)
    assert root.find("section", "crmagi-popup").attrs["class"] == "crmagi-popup crmagi-unknown"
    assert root.find("span", "crmagi-number").text == "+1 650-253-0001"
    assert root.find("span", "crmagi-cnam-text").text == "ACME CORP LINE 2"
    assert root.find("a", "crmagi-create-contact").attrs["href"] == \
        "https://crm.example.com/suite/index.php?module=Contacts&action=EditView&phone_work=%2B16502530001"
    assert root.find("a", "crmagi-create-lead").attrs["href"] == \
        "https://crm.example.com/suite/index.php?module=Leads&action=EditView&phone_work=%2B16502530001"
    assert len(root.find("table", "crmagi-phonebook").find_all("tr")) == 4
    assert not root.find_all(cls="crmagi-lookup-failed") and not root.find_all(cls="crmagi-module")
    assert out.title == "Call from +1 650-253-0001"
    assert out.notify == "+1 650-253-0001 — unknown number (caller ID: ACME CORP LINE 2)"


def test_unknown_popup_when_crm_did_not_answer(engine):
    root = parse(content(engine).render(CallInfo("call-t", "l", "8 (499) 123 45 67", result=None)).html)
    assert root.find("section", "crmagi-popup").attrs["class"] == "crmagi-popup crmagi-unknown"
    assert root.find("span", "crmagi-number").text == "8 (499) 123 45 67"
    assert root.find("a", "crmagi-create-contact").attrs["href"] == \
        "index.php?module=Contacts&action=EditView&phone_work=8%20%28499%29%20123%2045%2067"
    root.find(cls="crmagi-lookup-failed")


def test_unidentified_popup(engine):
    call = CallInfo("call-a", "l", "anonymous", result=LookupResult("anonymous", "anonymous"))
    out = content(engine, anonymous_account="acc-anon").render(call)
    root = parse(out.html)
    assert root.find("section", "crmagi-popup").attrs["class"] == "crmagi-popup crmagi-unidentified"
    assert root.find("a", "crmagi-anonymous-account").attrs["href"] == \
        "index.php?module=Accounts&action=DetailView&record=acc-anon"
    assert root.find("a", "crmagi-edit-call").attrs["href"] == "index.php?module=Calls&action=EditView&record=call-a"
    root.find("table", "crmagi-phonebook")
    assert out.title == "Call from a withheld number" and out.notify == "Withheld number"


def test_crm_down_still_renders(dead_engine):
    out = content(dead_engine).render(CallInfo("call-d", "l", "+16502530000", result=found()))
    root = parse(out.html)
    assert root.find("h2", "crmagi-name").text == "Ann Smith"
    assert root.find("p", "crmagi-history-unavailable").text == "history unavailable"
    assert root.find(cls="crmagi-staff-unavailable").text == "phone book unavailable"
    assert not root.find_all("table")


# -- the environment -----------------------------------------------------------------------------

def test_environment_is_strict_and_escapes():
    env = environment()
    assert TEMPLATE in env.list_templates()
    with pytest.raises(UndefinedError):
        env.from_string("{{ missing }}").render()
    with pytest.raises(UndefinedError):
        env.get_template(TEMPLATE).render(kind="known", call_id="c")
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


# -- the user's SuiteCRM language, date format and time zone ----------------------------------

RU_PREFS = ('a:6:{s:2:"ut";s:1:"1";s:8:"timezone";s:13:"Europe/Moscow";s:8:"language";s:5:"ru_RU";'
            's:5:"datef";s:5:"d.m.Y";s:5:"timef";s:3:"H:i";s:9:"ContactsQ";a:1:{s:13:"searchFormTab";'
            's:12:"basic_search";}}')


def test_popup_in_the_users_language_format_and_zone(engine):
    """Will's SuiteCRM preferences (as SuiteCRM writes them: base64 of serialize()) say ru_RU,
    d.m.Y H:i, Europe/Moscow: his popup is Russian, with his format, in his zone."""
    import base64
    from crmsync.userlocale import UserLocale, UserLocales

    with engine.begin() as conn:
        insert(conn, "user_preferences", id="pref-will", category="global", deleted=0,
               assigned_user_id=WILL.id, date_modified="2026-11-01 00:00:00",
               contents=base64.b64encode(RU_PREFS.encode()).decode())
    try:
        locales = UserLocales(engine, UserLocale())
        assert locales.get(WILL.id) == UserLocale("ru_RU", "d.m.Y", "H:i", "Europe/Moscow")
        assert locales.get(SALLY.id) == UserLocale()         # her prefs name no language: the site's
        call = CallInfo("call-now", "l-1", "+16502530000", result=found())
        out = content(engine, locales=locales).render(call, for_user=WILL)
        root = parse(out.html)
        assert root.find("span", "crmagi-direction").text == "Входящий звонок"
        headings = [h.text for h in root.find_all("h3", "crmagi-heading")]
        assert headings[:2] == ["История с этим клиентом", "Телефонная книга"]
        first = root.find_all("li", "crmagi-history-item")[0]
        assert first.find("time").text == "25.11.2026 13:00"      # 10:00 UTC in Moscow (UTC+3)
        assert first.find("span", "crmagi-kind").text == "Звонок"
        assert first.find("span", "crmagi-status").text == "Не состоялся"
        assert root.find("a", "crmagi-edit-call").text == "Изменить этот звонок"
        assert root.find("span", "crmagi-module").text == "Контакты"
        assert out.title == "Звонок от Ann Smith"
        assert_safe(root)
        english = parse(content(engine, locales=locales).render(call, for_user=SALLY).html)
        assert english.find("span", "crmagi-direction").text == "Incoming call"
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM user_preferences WHERE id = 'pref-will'"))
