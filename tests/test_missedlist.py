"""The missed-calls list beside the popup (webpush/missedlist.py, templates/missed.html.j2):
what a tab is sent when it connects and when the entries change, rendered and escaped.
The entries' storage is tested on MariaDB in test_missed.py; here they come from a dict."""
import dataclasses
import json
from datetime import datetime, timezone

import gevent

from crmsync.models import MissedEntry
from crmsync.userlocale import UserLocale
from test_hub import Quick
from webpush.content import PopupContent
from webpush.hub import Hub, Tab, user_room
from webpush.missedlist import MissedBoard

WHEN = datetime(2026, 12, 6, 11, 20, tzinfo=timezone.utc)
KNOWN = MissedEntry("e1", "3063920092", 3, WHEN, WHEN, module="Contacts", record_id="c1", name="Maxine <b>H</b>")
UNKNOWN = MissedEntry("e2", "4930111", 1, WHEN, WHEN, caller_name='<img src=x onerror="alert(1)">')


class Locales:
    """crmsync.userlocale.UserLocales as the popup content asks it: a user's SuiteCRM settings."""

    def get(self, user_id):
        return UserLocale("ru_RU", "d.m.Y", "H:i", "Europe/Moscow") if user_id == "u-ru" else UserLocale()


def board(entries):
    hub = Hub()
    content = PopupContent(directory=None, history=None, site_url="https://crm.example.com/", locales=Locales())
    return hub, MissedBoard(hub, lambda users: {u: list(entries.get(u, ())) for u in users}, content, delay=0.01)


def joined(hub, missed, user_id):
    tab = Tab(Quick(), user_id)
    hub.join(tab, user_room(user_id))
    missed.joined(tab)
    gevent.sleep(0.05)
    return tab


def messages_of(tab):
    return [json.loads(text) for text in tab.transport.sent]


def test_a_tab_gets_its_users_list_escaped_with_call_back_links():
    entries = {"u1": [KNOWN, UNKNOWN]}
    hub, missed = board(entries)
    [message] = messages_of(joined(hub, missed, "u1"))
    assert (message["type"], message["count"]) == ("missed", 2)
    html = message["html"]
    assert "Maxine &lt;b&gt;H&lt;/b&gt;" in html and "<b>" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html and "<img" not in html
    assert 'href="tel:3063920092" data-crmagi-module="Contacts" data-crmagi-record="c1"' in html
    assert 'href="tel:4930111">' in html                  # unknown caller: no record hint
    assert 'href="https://crm.example.com/index.php?module=Contacts&amp;action=DetailView&amp;record=c1"' in html
    assert 'data-crmagi-attempts="3">3 attempts<' in html and 'data-crmagi-attempts="1">1 attempt<' in html
    assert '<time datetime="2026-12-06T11:20:00Z">12/06/2026 11:20</time>' in html    # the site's format, UTC


def test_the_list_is_in_each_users_language_format_and_zone():
    hub, missed = board({"u-ru": [KNOWN, UNKNOWN, dataclasses.replace(UNKNOWN, entry_id="e3", attempts=5)]})
    html = messages_of(joined(hub, missed, "u-ru"))[0]["html"]
    assert ">Пропущенные звонки <" in html and ">Перезвонить</a>" in html and ">Контакты</span>" in html
    assert 'data-crmagi-attempts="3">3 попытки<' in html and 'data-crmagi-attempts="1">1 попытка<' in html
    assert 'data-crmagi-attempts="5">5 попыток<' in html
    assert '<time datetime="2026-12-06T11:20:00Z">06.12.2026 14:20</time>' in html


def test_a_change_is_sent_once_to_every_tab_of_the_user_and_an_empty_list_clears_it():
    entries = {"u1": [KNOWN]}
    hub, missed = board(entries)
    tabs = [joined(hub, missed, "u1"), joined(hub, missed, "u1")]
    other = joined(hub, missed, "u2")
    missed.refresh()                          # nothing changed: nothing sent
    assert [len(t.transport.sent) for t in tabs + [other]] == [1, 1, 1]
    entries["u1"] = []                        # a connected call closed the entry
    missed.changed()
    missed.changed()                          # two calls ended: one read
    gevent.sleep(0.1)
    for tab in tabs:
        assert messages_of(tab)[-1] == {"type": "missed", "html": "", "count": 0}
    assert len(other.transport.sent) == 1


def test_a_crm_that_cannot_answer_sends_nothing():
    hub = Hub()

    def down(users):
        raise RuntimeError("CRM down")

    missed = MissedBoard(hub, down, PopupContent(directory=None, history=None))
    tab = joined(hub, missed, "u1")
    missed.refresh()
    assert tab.transport.sent == []


class Access:
    """crmsync.access.RecordAccess as the content asks it (the rules are tested on MariaDB and the
    real SuiteCRM in test_record_access.py / test_acl_peer.py): u-denied may not view c1."""

    def __init__(self):
        self.asked = 0

    def can_view(self, user_id, module, table, record_id):
        self.asked += 1
        return (user_id, module, table, record_id) != ("u-denied", "Contacts", "contacts", "c1")


def test_a_record_the_user_may_not_view_shows_as_its_module_only():
    from types import SimpleNamespace

    from crmsync.models import ModuleSpec
    hub = Hub()
    rules = SimpleNamespace(modules=(ModuleSpec("Contacts", "contacts", ("phone_work",)),))
    access = Access()
    content = PopupContent(directory=SimpleNamespace(rules=rules), history=None, locales=Locales(), access=access)
    missed = MissedBoard(hub, lambda users: {u: [KNOWN, UNKNOWN] for u in users}, content, delay=0.01)
    [denied] = messages_of(joined(hub, missed, "u-denied"))
    html = denied["html"]
    assert "Maxine" not in html and "record=c1" not in html and 'data-crmagi-record="c1"' not in html
    assert "a record you cannot open" in html and ">Contacts<" in html and 'href="tel:3063920092">' in html
    [allowed] = messages_of(joined(hub, missed, "u-other"))
    assert "Maxine &lt;b&gt;H&lt;/b&gt;" in allowed["html"] and 'data-crmagi-record="c1"' in allowed["html"]
    missed.refresh()                          # the 15 s refresh: the decisions are kept, not asked again
    assert access.asked == 2
