"""Rows of a CDR database table, as cdr_csv would have written them (column -> text).

Asterisk's CDR table (contrib/ast-db-manage, written by cdr_adaptive_odbc) has the
cdr_csv columns with ``start``/``answer``/``end``, plus ``linkedid``; the older
cdr_mysql layout has only ``calldate`` (the start): answer and end follow from
``duration`` and ``billsec``.  The table is reflected, never declared here.
"""
from datetime import timedelta

from sqlalchemy import MetaData, Table, select
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from .db import CrmUnavailable, SchemaError

REQUIRED = ("src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
            "duration", "billsec", "disposition")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def read(engine, table_name, since, until):
    """[{column: text}] of the rows that started in [since, until): naive datetimes in the
    table's own zone, as Asterisk writes them."""
    try:
        table = Table(table_name, MetaData(), autoload_with=engine)
    except NoSuchTableError:
        raise SchemaError("%s: CDR table not found" % table_name) from None
    except SQLAlchemyError as exc:
        raise CrmUnavailable("CDR database: %s" % exc) from exc
    start = table.c.get("start") if "start" in table.c else table.c.get("calldate")
    missing = [name for name in REQUIRED if name not in table.c]
    if start is None or missing or not ({"uniqueid", "linkedid"} & set(table.c.keys())):
        raise SchemaError("%s.%s: column not found" % (table_name, (missing or ["start/calldate or uniqueid"])[0]))
    query = select(table).where(start >= since, start < until).order_by(start)
    try:
        with engine.connect() as conn:
            return [_as_text(dict(row), start.name) for row in conn.execute(query).mappings()]
    except SQLAlchemyError as exc:
        raise CrmUnavailable("CDR database: %s" % exc) from exc


def _as_text(row, start_column):
    began = row[start_column]
    duration, billsec = int(row["duration"] or 0), int(row["billsec"] or 0)
    end = row.get("end") or began + timedelta(seconds=duration)
    answer = row.get("answer") if "answer" in row else (end - timedelta(seconds=billsec) if billsec else None)
    text = {key: "" if value is None else str(value) for key, value in row.items()}
    text.update(start=began.strftime(TIME_FORMAT), end=end.strftime(TIME_FORMAT),
                answer=answer.strftime(TIME_FORMAT) if answer else "")
    return text
