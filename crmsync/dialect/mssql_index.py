"""The phone index's SQL on Microsoft SQL Server: its tables, a T-SQL function computing the
digit key, one trigger per table, and a set-based rebuild.

T-SQL has no regular expressions, so ``crmagi_digits_rev`` spells the key rule of
crmsync/triggers.py out as a scan from the end of the value: trailing whitespace, 1 to 7
digits, whitespace, an extension marker (``x``, ``#``, ``ext``, ``ext.``, ``extn``,
``extn.``, ``extension``, ``доб``, ``доб.``, ``вн``, ``вн.``, ``;ext=``, in any case Python's ``(?i)`` accepts), and
before it whitespace, a digit or ``)``: such a suffix is cut, then the ASCII digits are
read backwards (tests/test_mssql.py runs a Python transcription of the same steps
against ``triggers.digits_rev``).  Whitespace is Python's ``\\s``, written as NCHAR codes so
the statements are ASCII.  Digits are compared by code point (``LIKE '[0-9]'`` would take
``²`` for a digit in most collations).

T-SQL triggers fire once per statement, with the ``inserted`` and ``deleted`` rows: one
``AFTER INSERT, UPDATE, DELETE`` trigger per table removes the index rows of records gone
or deleted and of values that changed (compared as bytes), and inserts the keys of new
values; unchanged values are left alone, as on MariaDB.
"""
from typing import NamedTuple

from sqlalchemy import Column, MetaData, SmallInteger, String, Table, text

from .. import indexsync, triggers
from ..triggers import INDEX_TABLE, KEY_DIGITS, MAX_ID_LENGTH, _OTHER_SPACE

FUNCTION = "crmagi_digits_rev"
BIN = "Latin1_General_BIN2"       # byte-exact comparisons, and LIKE prefix reads use the index
_MARKERS = ("extension", "extn.", "extn", "ext.", "ext", "x", "#", "доб.", "доб", "вн.", "вн")
# Letters Python's case-insensitive match takes for a marker's letter besides its two cases
# (LOWER does not map them): replaced before the markers are compared.
FOLDS = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u1c80": "в", "\u1c81": "д", "\u1c82": "о"}


def _spaces():
    chars, rest = [], _OTHER_SPACE
    while rest:
        if len(rest) > 2 and rest[1] == "-":
            chars += [chr(c) for c in range(ord(rest[0]), ord(rest[2]) + 1)]
            rest = rest[3:]
        else:
            chars.append(rest[0])
            rest = rest[1:]
    return " \t\n\v\f\r" + "".join(chars)


SPACES = _spaces()     # Python's str.isspace(), as triggers._PY_SPACE


def nstring(value):
    """An ASCII T-SQL expression for a unicode string (NCHAR codes where needed)."""
    parts, plain = [], ""
    for ch in value:
        if " " < ch < "\x7f" and ch not in "'":
            plain += ch
            continue
        if plain:
            parts.append("N'%s'" % plain)
            plain = ""
        parts.append("NCHAR(%d)" % ord(ch))
    if plain:
        parts.append("N'%s'" % plain)
    return " + ".join(parts)


def _space(position):
    return "CHARINDEX(SUBSTRING(@value, %s, 1) COLLATE %s, @ws) > 0" % (position, BIN)


def _digit(position):
    return "UNICODE(SUBSTRING(@value, %s, 1)) BETWEEN 48 AND 57" % position


def _ends_with(marker, at="@i"):
    n = len(marker)
    return "%s >= %d AND SUBSTRING(@low, %s - %d, %d) = (%s) COLLATE %s" % (at, n, at, n - 1, n, nstring(marker), BIN)


def function_sql():
    markers = " ELSE ".join("IF %s SET @m = @i - %d" % (_ends_with(m), len(m) - 1) for m in _MARKERS)
    return (
        "CREATE FUNCTION [dbo].[{f}] (@value NVARCHAR(4000)) RETURNS VARCHAR({keep})\n"
        "AS\nBEGIN\n"
        "    -- crmagi phone key v{version}: crmsync/dialect/mssql_index.py\n"
        "    IF @value IS NULL RETURN NULL;\n"
        "    DECLARE @ws NVARCHAR(64) = {ws};\n"
        "    DECLARE @low NVARCHAR(4000) = {low};\n"
        "    DECLARE @n INT = DATALENGTH(@value) / 2, @i INT, @last INT, @m INT = 0, @k INT, @c INT;\n"
        "    DECLARE @key VARCHAR({keep}) = '';\n"
        "    SET @i = @n;\n"
        "    WHILE @i > 0 AND {space_i} SET @i = @i - 1;\n"
        "    SET @last = @i;\n"
        "    WHILE @i > 0 AND {digit_i} SET @i = @i - 1;\n"
        "    IF @last - @i BETWEEN 1 AND 7\n"
        "    BEGIN\n"
        "        WHILE @i > 0 AND {space_i} SET @i = @i - 1;\n"
        "        {markers}\n"
        "        ELSE IF @i >= 1 AND SUBSTRING(@value, @i, 1) = N'=' COLLATE {bin}\n"
        "        BEGIN\n"
        "            SET @k = @i - 1;\n"
        "            WHILE @k > 0 AND {space_k} SET @k = @k - 1;\n"
        "            IF {ext_k}\n"
        "            BEGIN\n"
        "                SET @k = @k - 3;\n"
        "                WHILE @k > 0 AND {space_k} SET @k = @k - 1;\n"
        "                IF @k >= 1 AND SUBSTRING(@value, @k, 1) = N';' COLLATE {bin} SET @m = @k;\n"
        "            END\n"
        "        END\n"
        "        IF @m > 0\n"
        "        BEGIN\n"
        "            SET @k = @m - 1;\n"
        "            WHILE @k > 0 AND {space_k} SET @k = @k - 1;\n"
        "            IF @k < @m - 1 OR (@k >= 1 AND ({digit_k} OR UNICODE(SUBSTRING(@value, @k, 1)) = 41))\n"
        "                SET @n = @m - 1;\n"
        "        END\n"
        "    END\n"
        "    SET @i = @n;\n"
        "    WHILE @i > 0 AND LEN(@key) < {keep}\n"
        "    BEGIN\n"
        "        SET @c = UNICODE(SUBSTRING(@value, @i, 1));\n"
        "        IF @c BETWEEN 48 AND 57 SET @key = @key + CHAR(@c);\n"
        "        SET @i = @i - 1;\n"
        "    END\n"
        "    RETURN @key;\n"
        "END").format(f=FUNCTION, keep=KEY_DIGITS, version=triggers.KEY_VERSION, ws=nstring(SPACES),
                      space_i=_space("@i"), digit_i=_digit("@i"), space_k=_space("@k"), digit_k=_digit("@k"),
                      markers=markers, bin=BIN, ext_k=_ends_with("ext", "@k"), low=_folded("LOWER(@value)"))


def _folded(expr):
    for char, letter in sorted(FOLDS.items()):
        expr = "REPLACE(%s COLLATE %s, NCHAR(%d), %s)" % (expr, BIN, ord(char), nstring(letter))
    return expr


def key_of(expr):
    return "[dbo].[%s](%s)" % (FUNCTION, expr)


# -- triggers --------------------------------------------------------------------------------

def trigger_name(table):
    return triggers.trigger_name(table, "aiud")


def _bytes(expr):
    return "CAST(%s AS VARBINARY(MAX))" % expr


def _module_statements(module, fields):
    """The statements of one module's part of a table's trigger."""
    out = ["DELETE i FROM [{idx}] i JOIN deleted d ON i.record_id = d.id WHERE i.module = '{m}'"
           " AND NOT EXISTS (SELECT 1 FROM inserted n WHERE n.id = d.id AND n.deleted = 0);"
           .format(idx=INDEX_TABLE, m=module)]
    for field in fields:
        names = dict(idx=INDEX_TABLE, m=module, f=field, new=_bytes("n.[%s]" % field), old=_bytes("d.[%s]" % field),
                     key=key_of("n.[%s]" % field))
        out.append("DELETE i FROM [{idx}] i JOIN deleted d ON i.record_id = d.id JOIN inserted n ON n.id = d.id"
                   " WHERE i.module = '{m}' AND i.field = '{f}'"
                   " AND NOT EXISTS (SELECT {new} INTERSECT SELECT {old});".format(**names))
        out.append("INSERT INTO [{idx}] (module, record_id, field, digits_rev)"
                   " SELECT '{m}', n.id, '{f}', k.digits_rev FROM inserted n"
                   " CROSS APPLY (SELECT {key} AS digits_rev) k"
                   " WHERE n.deleted = 0 AND k.digits_rev <> ''"
                   " AND NOT EXISTS (SELECT 1 FROM [{idx}] i WHERE i.module = '{m}' AND i.record_id = n.id"
                   " AND i.field = '{f}');".format(**names))
    return out


def trigger_sql(name, table, modules):
    body = [statement for module, fields in modules for statement in _module_statements(module, fields)]
    return ("CREATE TRIGGER [%s] ON [%s] AFTER INSERT, UPDATE, DELETE AS\nBEGIN\n    SET NOCOUNT ON;\n    %s\nEND"
            % (name, table, "\n    ".join(body)))


class Trigger(NamedTuple):
    table: str
    body: str       # the whole CREATE TRIGGER text: what OBJECT_DEFINITION gives back


def bodies(specs):
    found = {}
    for table, modules in triggers.by_table(specs).items():
        name = trigger_name(table)
        found[name] = Trigger(table, trigger_sql(name, table, modules))
    return found


# -- tables ----------------------------------------------------------------------------------

def tables(state_table):
    """crmagi's index tables, declared for SQL Server (created with metadata.create_all)."""
    metadata = MetaData()
    index = Table(
        INDEX_TABLE, metadata,
        Column("module", String(100, collation=BIN), primary_key=True),
        # The database's own collation, as the CRM's ids it is joined to.
        Column("record_id", String(MAX_ID_LENGTH), primary_key=True),
        Column("field", String(64, collation=BIN), primary_key=True),
        Column("digits_rev", String(KEY_DIGITS, collation=BIN), nullable=False, index=True),
        Column("e164", String(16, collation=BIN), index=True),
        Column("national", String(32, collation=BIN)),
        Column("parsed", SmallInteger, nullable=False, server_default=text("0")))
    state = Table(state_table, metadata,
                  Column("name", String(64, collation=BIN), primary_key=True),
                  Column("value", String(255), nullable=False))
    return metadata, index, state


class SqlServerIndexSql:
    def __init__(self, engine):
        self.engine = engine

    @staticmethod
    def quote(name):
        return "[%s]" % name

    def create_tables(self, conn, table, state_table):
        metadata = tables(state_table)[0]
        metadata.create_all(conn, checkfirst=True)
        if not conn.execute(text("SELECT OBJECT_ID(:f, 'FN')"), {"f": "dbo." + FUNCTION}).scalar():
            conn.exec_driver_sql(function_sql())

    def drop_tables(self, conn, state_table):
        for name in (INDEX_TABLE, state_table):
            conn.exec_driver_sql("IF OBJECT_ID(N'%s', N'U') IS NOT NULL DROP TABLE [%s]" % (name, name))
        conn.exec_driver_sql("IF OBJECT_ID(N'dbo.%s', N'FN') IS NOT NULL DROP FUNCTION [dbo].[%s]"
                             % (FUNCTION, FUNCTION))

    @staticmethod
    def wanted(specs):
        return {name: (trigger.table, trigger.body, None) for name, trigger in bodies(specs).items()}

    @staticmethod
    def fingerprint(specs):
        # The function is part of every trigger: its text changes the fingerprint too.
        return triggers.fingerprint(specs) + "-" + _digest(function_sql() + "".join(
            trigger.body for _, trigger in sorted(bodies(specs).items())))

    @staticmethod
    def installed(conn, tables=None):
        rows = conn.execute(text(
            "SELECT t.name, OBJECT_NAME(t.parent_id), OBJECT_DEFINITION(t.object_id) FROM sys.triggers t"
            " WHERE t.parent_class = 1 AND t.name LIKE 'crmagi[_]%'"))
        return {name: (table, body) for name, table, body in rows
                if INDEX_TABLE in (body or "") and (not tables or table in tables)}

    def create_trigger(self, conn, name, table, body, _event):
        self.drop_trigger(conn, name)
        conn.exec_driver_sql(body)       # CREATE TRIGGER must be a batch of its own

    @staticmethod
    def drop_trigger(conn, name):
        conn.exec_driver_sql("IF OBJECT_ID(N'%s', N'TR') IS NOT NULL DROP TRIGGER [%s]" % (name, name))

    @staticmethod
    def candidates_sql(limit):
        return "SELECT TOP %d module, record_id, field FROM %s WHERE digits_rev LIKE :p" % (limit, INDEX_TABLE)

    # Lock waits of 10 s (then the default), for the rebuild and for DDL, which otherwise
    # queues the CRM's own queries behind the lock it waits for.
    session_settings = ddl_lock_wait = ("SET LOCK_TIMEOUT 10000", "SET LOCK_TIMEOUT -1")

    @staticmethod
    def table_exists(conn, name):
        return conn.execute(text("SELECT OBJECT_ID(:n, 'U')"), {"n": name}).scalar() is not None

    def rebuild(self, conn, rules, tables, batch_size, full, progress):
        """Each module in one transaction (REPEATABLE READ, crmsync/indexsync.py session): its
        source rows are read under shared locks, so a user's edit either committed before (its
        value is what is indexed) or waits and its trigger writes after.  (records, written,
        deleted); ``full`` changes nothing here: e164/national are not computed on SQL Server."""
        from sqlalchemy import func, select
        records = written = deleted = 0
        for spec in rules.modules:
            with indexsync.transaction(conn):
                count = conn.execute(select(func.count()).select_from(tables[spec.table])).scalar()
                remove, merge = self.rebuild_sql(spec)
                deleted += max(conn.exec_driver_sql(remove).rowcount, 0)
                written += max(conn.exec_driver_sql(merge).rowcount, 0)
            records += count
            if progress:
                progress(count)
        names = ", ".join("'%s'" % triggers.check_name("module", spec.name) for spec in rules.modules)
        with indexsync.transaction(conn):
            deleted += max(conn.exec_driver_sql("DELETE FROM [%s] WHERE module NOT IN (%s)"
                                                % (INDEX_TABLE, names)).rowcount, 0)
        return records, written, deleted

    @staticmethod
    def rebuild_sql(spec):
        """One module's index made to agree with its table, by the same T-SQL function as the
        triggers (e164/national are left NULL: informative only, see crmsync/phoneindex.py)."""
        current = "CASE i.field %s END" % " ".join("WHEN '%s' THEN t.[%s]" % (f, f) for f in spec.phone_fields)
        values = ", ".join("('%s', t.[%s])" % (f, f) for f in spec.phone_fields)
        names = dict(idx=INDEX_TABLE, m=spec.name, t=spec.table, current=key_of(current),
                     fields=", ".join("'%s'" % f for f in spec.phone_fields), values=values, key=key_of("v.value"))
        return [
            "DELETE i FROM [{idx}] i WHERE i.module = '{m}' AND NOT EXISTS (SELECT 1 FROM [{t}] t"
            " WHERE t.id = i.record_id AND t.deleted = 0 AND i.field IN ({fields})"
            " AND COALESCE({current}, '') <> '')".format(**names),
            "MERGE [{idx}] AS i USING (SELECT t.id AS record_id, v.field, {key} AS digits_rev FROM [{t}] t"
            " CROSS APPLY (VALUES {values}) v (field, value) WHERE t.deleted = 0) s"
            " ON i.module = '{m}' AND i.record_id = s.record_id AND i.field = s.field"
            " WHEN MATCHED AND s.digits_rev <> '' AND i.digits_rev <> s.digits_rev THEN"
            " UPDATE SET digits_rev = s.digits_rev, e164 = NULL, national = NULL, parsed = 0"
            " WHEN NOT MATCHED BY TARGET AND s.digits_rev <> '' THEN"
            " INSERT (module, record_id, field, digits_rev) VALUES ('{m}', s.record_id, s.field, s.digits_rev);"
            .format(**names)]


def _digest(value):
    import hashlib
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
