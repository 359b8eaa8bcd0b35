"""The per-module record queries of a caller lookup (used by crmsync.directory).

Both select the same columns (id, name fields, owner, date_modified, the phone
columns and, for Contacts and Leads, the company), so one verification serves
both:

``scan``
    Without the phone index: the live records whose phone columns, stripped of
    `` -().+/``, contain the caller's last ``suffix_digits`` digits (bound as
    ``:p``).  "Contain", not "end with": a stored ``… доб. 12`` or ``… x12`` must
    not hide the number in front of it.  Portable to SQLite and MariaDB; a scan.
``by_id``
    The live records (``deleted = 0``) among given ids (bound as ``:ids``),
    with their current phone values (click-to-call checks the clicked record).
``by_index``
    With the phone index: the index rows of the module whose ``digits_rev``
    starts with the caller's reversed last digits (bound as ``:p``, a LIKE
    prefix), joined to their live records (``deleted = 0``) with the current
    phone values; the index row's ``field`` comes first.  Directory sends the
    query of every module in one round trip.

On MariaDB/MySQL ``by_index`` names the indexes it reads (``FORCE INDEX``): the
index table's digits key and the records' primary key.  Left to itself the
optimizer also estimates every other index whose first column is in the WHERE
clause -- ``module`` of the index table's key, ``deleted`` of SuiteCRM's
``idx_contacts_del_last`` and the like, each a range over nearly the whole
table -- by reading into the B-trees on every lookup, only to choose the same
plan: about a third of the statement's time on 1M contacts (README, "Speed").
"""
import json
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (String, bindparam, column, func, literal_column, null, or_, select, table as table_clause,
                        union_all)

from .phoneindex import MAX_CANDIDATES
from .triggers import DIGITS_KEY, INDEX_TABLE

MAX_SCAN_ROWS = 200
_INDEX = table_clause(INDEX_TABLE, column("module"), column("record_id"), column("field"), column("digits_rev"))
_SEPARATORS = (" ", "-", "(", ")", ".", "+", "/")
_HINTED = ("mysql", "mariadb")      # SQLAlchemy's names of the dialects that take index hints


class ModuleQuery(NamedTuple):
    spec: object        # models.ModuleSpec
    names: tuple        # the name columns, in display order
    scan: object        # select, bound :p
    by_id: object       # select, bound :ids (expanding)
    by_index: object    # select, bound :p (the index's LIKE prefix)


def name_fields(spec, table):
    if spec.name_fields:
        return spec.name_fields
    if "first_name" in table.c and "last_name" in table.c:
        return ("first_name", "last_name")
    return ("name",)


def module_query(spec, tables) -> ModuleQuery:
    """Row shape: id, *names, assigned_user_id, date_modified, *phones[, account name]."""
    table = tables[spec.table]
    names = name_fields(spec, table)
    phones = [table.c[column] for column in spec.phone_fields]
    columns = [table.c.id, *(table.c[n] for n in names), table.c.assigned_user_id,
               table.c.date_modified, *phones]
    if spec.table == "contacts":
        links, accounts = tables["accounts_contacts"], tables["accounts"]
        # A contact may belong to several accounts: take the first by name.
        columns.append(_by_primary_key(
            select(func.min(accounts.c.name))
            .select_from(links.join(accounts, accounts.c.id == links.c.account_id))
            .where(links.c.contact_id == table.c.id, links.c.deleted == 0, accounts.c.deleted == 0),
            accounts).scalar_subquery())
    elif "account_name" in table.c:   # Leads and Targets carry the company as text
        columns.append(table.c.account_name)
    pattern = bindparam("p")
    scan = (select(*columns)
            .where(table.c.deleted == 0, or_(*(_digits_only(c).like(pattern) for c in phones)))
            .order_by(table.c.date_modified.desc(), table.c.id)
            .limit(MAX_SCAN_ROWS))
    by_id = select(*columns).where(table.c.deleted == 0, table.c.id.in_(bindparam("ids", expanding=True)))
    by_index = (select(_INDEX.c.field, *columns)
                .select_from(_INDEX.join(table, table.c.id == _INDEX.c.record_id))
                .where(_INDEX.c.digits_rev.like(bindparam("p", type_=String())), _INDEX.c.module == spec.name,
                       table.c.deleted == 0)
                .limit(MAX_CANDIDATES))
    by_index = _by_primary_key(_hint(by_index, _INDEX, DIGITS_KEY), table)
    return ModuleQuery(spec, names, scan, by_id, by_index)


def _hint(stmt, table, index):
    """``stmt`` reading ``table`` through ``index`` only, where the database takes the hint."""
    for dialect in _HINTED:
        stmt = stmt.with_hint(table, "FORCE INDEX (%s)" % index, dialect)
    return stmt


def _by_primary_key(stmt, table):
    """``stmt`` reading ``table`` by its primary key only, when that key is ``id`` (as in every
    SuiteCRM table; a table reflected otherwise is left to the optimizer)."""
    if [column.name for column in table.primary_key.columns] != ["id"]:
        return stmt
    return _hint(stmt, table, "PRIMARY")


def _digits_only(column):
    """The column without the separators people type; portable to SQLite and MariaDB."""
    expr = column
    for char in _SEPARATORS:
        expr = func.replace(expr, char, "")
    return expr


class IndexUnion(NamedTuple):
    """Every module's ``by_index`` as ONE statement: its rows carry the module's position,
    the index field, then the module's row, either padded with NULLs to the widest module
    or (``json``) as one JSON array column (see the dialects' ``json_rows``)."""
    statement: object
    names: int          # name columns of the widest module
    phones: int         # phone columns of the widest module
    json: bool = False

    def own_row(self, query, row):
        """(position, field) already read: the module's own row shape, as ``module_query`` says."""
        if self.json:
            return _from_json(query, row[2])
        n, m = len(query.names), len(query.spec.phone_fields)
        rest = row[3 + self.names:]           # owner, modified, phones..., account
        out = (row[2], *row[3:3 + n], rest[0], rest[1], *rest[2:2 + m])
        return out + (rest[2 + self.phones],) if _has_account(query) else out


def _from_json(query, text):
    values = json.loads(text)
    at = 2 + len(query.names)                 # date_modified: JSON holds it as text
    try:
        values[at] = datetime.fromisoformat(values[at]) if values[at] else None
    except ValueError:          # a zero date ('0000-00-00 ...'): sorts as missing
        values[at] = None
    return tuple(values)


def _has_account(query):
    return len(query.by_index.selected_columns) > 4 + len(query.names) + len(query.spec.phone_fields)


def index_union(queries, json_rows=False) -> IndexUnion:
    widest_names = max(len(q.names) for q in queries)
    widest_phones = max(len(q.spec.phone_fields) for q in queries)
    parts = []
    for position, query in enumerate(queries):
        cols = list(query.by_index.selected_columns)
        row = [literal_column(str(position)), *(_json_row(cols) if json_rows else
                                                _padded_row(query, cols, widest_names, widest_phones))]
        parts.append(query.by_index.with_only_columns(*[c.label("c%d" % i) for i, c in enumerate(row)],
                                                      maintain_column_froms=False))
    return IndexUnion(union_all(*parts), widest_names, widest_phones, json_rows)


def _json_row(cols):
    return [cols[0], func.json_array(*cols[1:])]


def _padded_row(query, cols, widest_names, widest_phones):
    n, m = len(query.names), len(query.spec.phone_fields)
    return [*cols[:2 + n], *[null()] * (widest_names - n), cols[2 + n], cols[3 + n], *cols[4 + n:4 + n + m],
            *[null()] * (widest_phones - m), cols[4 + n + m] if _has_account(query) else null()]
