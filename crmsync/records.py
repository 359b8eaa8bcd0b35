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
    With the phone index: the live records (``deleted = 0``) among the
    candidate ids the index gave (bound as ``:ids``), with their current phone
    values.
"""
from typing import NamedTuple

from sqlalchemy import bindparam, func, or_, select

MAX_SCAN_ROWS = 200
_SEPARATORS = (" ", "-", "(", ")", ".", "+", "/")


class ModuleQuery(NamedTuple):
    spec: object        # models.ModuleSpec
    names: tuple        # the name columns, in display order
    scan: object        # select, bound :p
    by_id: object       # select, bound :ids (expanding)


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
        columns.append(
            select(func.min(accounts.c.name))
            .select_from(links.join(accounts, accounts.c.id == links.c.account_id))
            .where(links.c.contact_id == table.c.id, links.c.deleted == 0, accounts.c.deleted == 0)
            .scalar_subquery())
    elif "account_name" in table.c:   # Leads and Targets carry the company as text
        columns.append(table.c.account_name)
    pattern = bindparam("p")
    scan = (select(*columns)
            .where(table.c.deleted == 0, or_(*(_digits_only(c).like(pattern) for c in phones)))
            .order_by(table.c.date_modified.desc(), table.c.id)
            .limit(MAX_SCAN_ROWS))
    by_id = select(*columns).where(table.c.deleted == 0, table.c.id.in_(bindparam("ids", expanding=True)))
    return ModuleQuery(spec, names, scan, by_id)


def _digits_only(column):
    """The column without the separators people type; portable to SQLite and MariaDB."""
    expr = column
    for char in _SEPARATORS:
        expr = func.replace(expr, char, "")
    return expr
