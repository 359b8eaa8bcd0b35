"""A CRM record's recent activities (calls, meetings, notes, cases), for the call popup.

What SuiteCRM itself shows in a record's History/Activities subpanels comes from
two kinds of wiring (docs/suitecrm.md, section 4), so each kind of activity is
found both ways:

* the activity's ``parent_type``/``parent_id`` (or a direct column such as
  ``notes.contact_id`` and ``cases.account_id``);
* a link table row (``calls_contacts``, ``meetings_leads``, ``contacts_cases``, ...).

Tables are reflected (crmsync.db.Schema): a missing table or column simply
removes that way of finding items, so custom modules and older schemas work.
Only ``deleted = 0`` activities and link rows count.
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


class _Kind(NamedTuple):
    kind: str           # the label: Call, Meeting, Note, Case
    module: str         # the SuiteCRM module of the activity (for its URL)
    table: str
    when: tuple         # date columns, first non-NULL wins
    parent: bool        # has parent_type/parent_id
    direct: dict        # record module -> column of the activity holding the record id
    links: dict         # record module -> _Link


KINDS = (
    _Kind("Call", "Calls", "calls", ("date_start", "date_entered"), True, {},
          {"Contacts": _Link("calls_contacts", "contact_id", "call_id"),
           "Leads": _Link("calls_leads", "lead_id", "call_id")}),
    _Kind("Meeting", "Meetings", "meetings", ("date_start", "date_entered"), True, {},
          {"Contacts": _Link("meetings_contacts", "contact_id", "meeting_id"),
           "Leads": _Link("meetings_leads", "lead_id", "meeting_id")}),
    _Kind("Note", "Notes", "notes", ("date_entered",), True, {"Contacts": "contact_id"}, {}),
    _Kind("Case", "Cases", "cases", ("date_entered",), False, {"Accounts": "account_id"},
          {"Contacts": _Link("contacts_cases", "contact_id", "case_id")}),
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
        if exclude:
            stmt = stmt.where(table.c.id.not_in(list(exclude)))
        return stmt


def _conditions(kind, table, tables, module, record_id):
    found = []
    if kind.parent and "parent_type" in table.c and "parent_id" in table.c:
        found.append((table.c.parent_type == module) & (table.c.parent_id == record_id))
    column = kind.direct.get(module)
    if column and column in table.c:
        found.append(table.c[column] == record_id)
    link = kind.links.get(module)
    links = tables.get(link.table) if link else None
    if links is not None and {link.record, link.item, "deleted"} <= set(links.c.keys()):
        ids = select(links.c[link.item]).where(links.c[link.record] == record_id, links.c.deleted == 0)
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
