"""What crmagi says differently to each CRM database: MariaDB/MySQL, SQLite (the demo CRM)
and Microsoft SQL Server (SugarCRM CE 6.5 supports it; ``pip install crmagi[mssql]``).

Callers ask ``of(engine)`` for the engine's dialect and build their SQL from its parts
(quoting, the null-safe comparison, the row lock, the batch that commits in one round trip,
the error numbers) instead of spelling one database's syntax.  The hot path's statements
(crmsync/sqlbatch.py, calls.py, livecalls.py) are written with ``%s`` placeholders, the
paramstyle of both PyMySQL and pymssql; SQLite's part turns them into ``?``.
"""
from .mssql import MSSQL
from .mysql import MYSQL
from .sqlite import SQLITE

_BY_NAME = {"mysql": MYSQL, "mariadb": MYSQL, "sqlite": SQLITE, "mssql": MSSQL}


def named(name):
    """The dialect of an SQLAlchemy backend name; ValueError for a database crmagi does not speak."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError("crmagi supports MariaDB/MySQL, Microsoft SQL Server and SQLite, not %s" % name) from None


def of(engine):
    return named(engine.dialect.name)
