"""A CRM record's History, as SuiteCRM's History subpanel shows it, for the call popup.

SuiteCRM 7.14.6's History subpanel of a Contact, Lead or Account is a collection of
Calls and Meetings that were ``Held``/``Not Held``, Tasks that are ``Completed``/``Deferred``,
Notes and Emails (each module's ``metadata/subpanels/ForHistory.php``); planned calls and
meetings, open tasks and Cases are in other subpanels, so not here either.  Each module
finds them its own way (the link fields of ``modules/<M>/vardefs.php``; docs/suitecrm.md
section 4):

* Contacts: calls and meetings through ``calls_contacts``/``meetings_contacts`` only (a call
  whose ``parent_type`` alone names the contact is not in its History), notes by
  ``notes.contact_id``, tasks by ``tasks.contact_id`` or parent, emails by ``emails_beans``;
* Leads: the link tables, plus parent-linked calls and meetings (the "oldcalls" collection);
* Accounts and custom modules: ``parent_type``/``parent_id``, and emails by ``emails_beans``.

Tables are reflected (crmsync.db.Schema): a missing table or column simply
removes that way of finding items, so custom modules and older schemas work.
Only ``deleted = 0`` activities and link rows count.  Not covered: emails SuiteCRM finds
by address only (its "linkedemails" part) and an account's contacts' emails.
"""
from datetime import datetime, timezone
from typing import NamedTuple, Optional
from urllib.parse import quote

from sqlalchemy import func, null, or_, select

from .db import Schema
from .directory import _database_errors
from .models import HistoryItem


class _Link(NamedTuple):
    table: str          # the link table
    record: str         # its column holding the CRM record's id
    item: str           # its column holding the activity's id
    role: tuple = ()    # (column, value) the link row must also have, e.g. emails_beans.bean_module


class _Kind(NamedTuple):
    kind: str           # the label: Call, Meeting, Task, Note, Email
    module: str         # the SuiteCRM module of the activity (for its URL)
    table: str
    when: tuple         # date columns, first non-NULL wins
    parent_except: frozenset   # record modules whose History ignores parent_type/parent_id
    direct: dict        # record module -> column of the activity holding the record id
    links: dict         # record module -> _Link
    statuses: tuple = ()       # only these statuses are History (empty: all)


_CALL_OR_MEETING = ("Held", "Not Held")


def _emails(module):
    return _Link("emails_beans", "bean_id", "email_id", ("bean_module", module))


KINDS = (
    _Kind("Call", "Calls", "calls", ("date_start", "date_entered"), frozenset({"Contacts"}), {},
          {"Contacts": _Link("calls_contacts", "contact_id", "call_id"),
           "Leads": _Link("calls_leads", "lead_id", "call_id")}, _CALL_OR_MEETING),
    _Kind("Meeting", "Meetings", "meetings", ("date_start", "date_entered"), frozenset({"Contacts"}), {},
          {"Contacts": _Link("meetings_contacts", "contact_id", "meeting_id"),
           "Leads": _Link("meetings_leads", "lead_id", "meeting_id")}, _CALL_OR_MEETING),
    _Kind("Task", "Tasks", "tasks", ("date_due", "date_entered"), frozenset(), {"Contacts": "contact_id"}, {},
          ("Completed", "Deferred")),
    _Kind("Note", "Notes", "notes", ("date_entered",), frozenset({"Contacts"}), {"Contacts": "contact_id"}, {}),
    _Kind("Email", "Emails", "emails", ("date_sent_received", "date_entered"), frozenset({"Contacts", "Leads"}), {},
          {m: _emails(m) for m in ("Contacts", "Leads", "Accounts")}),
)


def detail_url(module, record_id):
    """The relative DetailView URL of a record (the popup prefixes the site URL)."""
    return "index.php?module=%s&action=DetailView&record=%s" % (quote(module, safe=""),
                                                                 quote(record_id, safe=""))


class History:
    """``recent(module, record_id)``: the record's activities, newest first."""

    def __init__(self, engine, limit: int = 10):
        self.engine = engine
        self.limit = limit
        names = [k.table for k in KINDS] + [link.table for k in KINDS for link in k.links.values()]
        self._schema = Schema(engine, names)

    def recent(self, module: str, record_id: str, limit: Optional[int] = None,
               exclude=()) -> list:
        """At most ``limit`` items; ``exclude``: activity ids to leave out (e.g. the current call).

        Raises crmsync.db.CrmUnavailable when the database cannot be reached.
        """
        limit = self.limit if limit is None else limit
        items = []
        with _database_errors():
            tables = self._schema.tables()
            with self.engine.connect() as conn:
                for kind in KINDS:
                    stmt = self._query(kind, tables, module, record_id, limit, exclude)
                    if stmt is not None:
                        items.extend(_item(kind, row) for row in conn.execute(stmt))
        # Each kind is already newest first; merging needs one more sort. Undated items go last.
        items.sort(key=lambda i: (i.when is not None, i.when or datetime.min.replace(tzinfo=timezone.utc)),
                   reverse=True)
        return items[:limit]

    @staticmethod
    def _query(kind, tables, module, record_id, limit, exclude):
        """The select of one kind of activity, or None when the schema offers no way to find it."""
        table = tables.get(kind.table)
        if table is None or not {"id", "name", "deleted"} <= set(table.c.keys()):
            return None
        found = _conditions(kind, table, tables, module, record_id)
        dates = [table.c[name] for name in kind.when if name in table.c]
        if not found or not dates:
            return None
        when = func.coalesce(*dates) if len(dates) > 1 else dates[0]
        # Notes have no status, only calls have a direction: NULL keeps one row shape.
        status = table.c.status if "status" in table.c else null()
        direction = table.c.direction if "direction" in table.c else null()
        stmt = (select(table.c.id, table.c.name, when, status, direction)
                .where(table.c.deleted == 0, or_(*found))
                .order_by(when.desc(), table.c.id)
                .limit(limit))
        if kind.statuses:
            if "status" not in table.c:
                return None
            stmt = stmt.where(table.c.status.in_(kind.statuses))
        if exclude:
            stmt = stmt.where(table.c.id.not_in(list(exclude)))
        return stmt


def _conditions(kind, table, tables, module, record_id):
    found = []
    if module not in kind.parent_except and "parent_type" in table.c and "parent_id" in table.c:
        found.append((table.c.parent_type == module) & (table.c.parent_id == record_id))
    column = kind.direct.get(module)
    if column and column in table.c:
        found.append(table.c[column] == record_id)
    link = kind.links.get(module)
    links = tables.get(link.table) if link else None
    roles = link.role[:1] if link else ()
    if links is not None and {link.record, link.item, "deleted", *roles} <= set(links.c.keys()):
        ids = select(links.c[link.item]).where(links.c[link.record] == record_id, links.c.deleted == 0)
        if link.role:
            ids = ids.where(links.c[link.role[0]] == link.role[1])
        found.append(table.c.id.in_(ids))
    return found


def _item(kind, row):
    record_id, subject, when, status, direction = row
    return HistoryItem(kind=kind.kind, record_id=record_id, subject=subject or "", when=_utc(when),
                       status=status or "", direction=direction or "",
                       url=detail_url(kind.module, record_id))


def _utc(value):
    """CRM datetimes are naive UTC (docs/suitecrm.md, section 7); SQLite may hand back text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
