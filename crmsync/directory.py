"""Who is calling: a caller number -> the SuiteCRM record it belongs to, and its owner.

Each configured module is searched in the configured order and the first module
with a match wins.  Two ways to find the candidates (crmsync/records.py), and
``explain`` says which one was used:

index
    When ``crmagi_phone_index`` is ready (crmsync/phoneindex.py; asked once,
    then every ``index_check_seconds``): ONE statement (one round trip,
    compiled once, prepared once per connection on MariaDB: crmsync/prepared.py,
    its indexes named: crmsync/records.py), per module a UNION ALL part reading the index range of
    the values ending with the caller's last ``suffix_digits`` digits (all of
    them when the caller has fewer), joined to their records with
    ``deleted = 0`` and their current phone values (crmsync/records.py).  A
    stale index row can cost a row read, never a wrong match.
scan
    Otherwise (SQLite, index not installed or not rebuilt): ONE query per
    module scanning the records whose phone columns contain those digits.

Either way the digits are a bound parameter, never SQL built from the caller ID,
and every candidate column is verified in Python with ``phone.match``.

Tie-break, when several records or columns of the winning module match:

1. the strongest rule (``e164`` > ``national`` > ``suffix``);
2. the column that comes first in the module's ``phone_fields``;
3. the most recent ``date_modified``;
4. the smallest record id.

Users (the record's owner, and extensions for outbound calls) come from an
in-memory map of active users, loaded with one query and refreshed after
``users_cache_seconds``: there are few users, and an outbound call should not
wait on the CRM database.
"""
import logging
import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from typing import NamedTuple, Optional

import gevent
from sqlalchemy import exc as sa_exc, select

from . import dialect as dialects
from . import phone, prepared
from .db import CrmUnavailable, Schema, SchemaError, driver_error
from .models import Caller, LookupResult, LookupRules, User
from .phoneindex import MAX_CANDIDATES, PhoneIndex
from .records import MAX_SCAN_ROWS, index_union, module_query, name_fields
from .triggers import KEY_DIGITS
from .userprefs import Prefs, UserPrefs

log = logging.getLogger(__name__)

_MODULE_COLUMNS = ("id", "deleted", "assigned_user_id", "date_modified")
_USER_COLUMNS = ("id", "user_name", "first_name", "last_name", "status", "deleted")
_USER_EXTRAS = ("department", "title")      # optional users columns, copied into User when present
_NOT_PEOPLE = ("is_group", "portal_only")    # optional users flags: such users are no one's colleague
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                sa_exc.DisconnectionError, OSError)


class _Match(NamedTuple):
    key: tuple          # the tie-break order (see the module docstring)
    record_id: str
    name: str
    account_name: Optional[str]
    owner_id: Optional[str]
    column: str
    stored: str
    rule: str


class _UserEntry(NamedTuple):
    user: User
    dropped: Optional[str]   # why the extension field was not taken as an extension


class _Users(NamedTuple):
    by_id: dict              # users.id -> _UserEntry
    by_extension: dict       # extension -> User
    loaded_at: float


@contextmanager
def _database_errors():
    """Connection failures and timeouts become CrmUnavailable, with the cause chained."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise CrmUnavailable("CRM database unavailable: %s" % (getattr(exc, "orig", None) or exc)) from exc


def _recency(modified):
    """Sorts the most recent date_modified first, and a missing one last."""
    return -(modified - datetime.min).total_seconds() if modified else float("inf")


def _extension(raw, max_digits):
    """(extension, None) when raw is a short all-digit extension, else (None, reason)."""
    if raw is None or not raw.strip():
        return None, None
    value = re.sub(r"[\s-]", "", raw)
    if not (value.isascii() and value.isdigit()):
        return None, "%r is not all digits" % raw
    if len(value) > max_digits:
        return None, "%r has %d digits, more than internal_max_digits=%d" % (raw, len(value), max_digits)
    return value, None


class Directory:
    """Caller lookup over the configured SuiteCRM modules, and the active users."""

    def __init__(self, engine, rules: LookupRules, users_cache_seconds: float = 30.0,
                 use_index: bool = True, index_check_seconds: float = 60.0):
        self.engine = engine
        self.rules = rules
        self.users_cache_seconds = users_cache_seconds
        self.index = PhoneIndex(engine, rules) if use_index else None
        self.index_check_seconds = index_check_seconds
        self._index_state = None     # (ready, why, monotonic time asked)
        self._rechecking = None      # the background check's greenlet, while it runs
        self._contacts = any(spec.table == "contacts" for spec in rules.modules)
        wanted = [spec.table for spec in rules.modules] + ["users"]
        if self._contacts:
            wanted += ["accounts_contacts", "accounts"]
        self._schema = Schema(engine, wanted)
        self._cstm_schema = Schema(engine, ["users_cstm"])
        self._checked = None     # tables, once problems() came back empty
        self._queries = None
        self._index_compiled = None
        self._dbapi = engine.dialect.dbapi
        self._users = None
        self._users_lock = threading.Lock()

    # -- schema ----------------------------------------------------------------

    def _tables(self):
        """Reflected tables; users_cstm only when the extension field is not a users column."""
        with _database_errors():
            tables = dict(self._schema.tables())
            users = tables.get("users")
            if users is not None and self.rules.extension_field not in users.c:
                tables.update(self._cstm_schema.tables())
        return tables

    def _required(self, tables):
        required = {}
        for spec in self.rules.modules:
            table = tables.get(spec.table)
            names = name_fields(spec, table) if table is not None else ()
            required.setdefault(spec.table, []).extend(_MODULE_COLUMNS + tuple(names) + spec.phone_fields)
        required["users"] = _USER_COLUMNS
        if "users" in tables and self.rules.extension_field not in tables["users"].c:
            required["users_cstm"] = ("id_c", self.rules.extension_field)
        if self._contacts:
            required["accounts_contacts"] = ["contact_id", "account_id", "deleted"]
            required["accounts"] = ["id", "name", "deleted"]
        return required

    def problems(self):
        """Every missing table and column, as ``table.column`` messages (empty when all is well)."""
        tables = self._tables()
        found = []
        for name, columns in self._required(tables).items():
            if name == "users_cstm" and name not in tables:
                found.append("users_cstm.%s: not a users column, and there is no users_cstm table"
                             % self.rules.extension_field)
            elif name not in tables:
                found.append("%s: table not found in the CRM database" % name)
            else:
                found.extend("%s.%s: column not found" % (name, column)
                             for column in dict.fromkeys(columns) if column not in tables[name].c)
        return found

    def _checked_tables(self):
        """The reflected tables, or SchemaError naming everything that is missing."""
        if self._checked is None:
            problems = self.problems()
            if problems:
                raise SchemaError("; ".join(problems))
            self._checked = self._tables()
        return self._checked

    # -- lookup ----------------------------------------------------------------

    def lookup(self, number: str) -> LookupResult:
        rules = self.rules
        kind = phone.classify(number, rules.internal_max_digits)
        if kind == "anonymous":
            return LookupResult("anonymous", number, explain=(
                "%r is anonymous (withheld, no digits, or letters): not searched" % number,))
        if kind == "internal":
            return LookupResult("internal", number, explain=(
                "%r has at most internal_max_digits=%d digits: an internal extension, not searched"
                % (number, rules.internal_max_digits),))
        caller = phone.parse(number, rules.default_region)
        explain = ["%r in region %s: digits %s, e164 %s, national %s, %s" % (
            number, rules.default_region, caller.digits, caller.e164 or "-", caller.national or "-",
            "with country code" if caller.international else "no country code")]
        if len(caller.digits) <= rules.internal_max_digits:
            explain.append("too few digits to be a customer's number: not searched")
            return LookupResult("unknown", number, caller.e164, explain=tuple(explain))
        spec, matches = self._search(caller, explain)
        if matches:
            return self._found(number, caller, spec, sorted(matches), explain)
        explain.append("no match in %s" % ", ".join(m.name for m in rules.modules))
        return LookupResult("unknown", number, caller.e164, explain=tuple(explain))

    def _search(self, caller, explain):
        """(module, its matches) for the first module with a match, else (None, [])."""
        ready, why = self._index_ready()
        if ready:
            try:
                return self._search_index(caller, explain)
            except sa_exc.ProgrammingError as exc:     # e.g. the table was dropped since
                log.warning("phone index unusable, scanning instead: %s", exc.orig)
                self._index_state = (False, "unusable: %s" % exc.orig, time.monotonic())
                explain.append("index unusable (%s): scanning instead" % exc.orig)
        else:
            explain.append("scan: the phone index is not used (%s)" % why)
        return self._search_scan(caller, explain)

    def _index_ready(self):
        """(ready, why), asked of the database at most every index_check_seconds.  Only the
        first answer is waited for (or every one, with index_check_seconds 0): later checks run
        in the background while lookups go on with the last answer.  The check reads
        information_schema.TRIGGERS, which waits behind any table's metadata lock (a DDL stuck
        behind a long transaction anywhere on the server): a lookup must never wait on that."""
        if self.index is None:
            return False, "disabled"
        state = self._index_state
        if state is None or self.index_check_seconds <= 0:
            state = self._check_index()
        elif time.monotonic() - state[2] >= self.index_check_seconds and self._rechecking is None:
            self._rechecking = gevent.spawn(self._recheck_index)
        return state[0], state[1]

    def _check_index(self):
        try:
            with _database_errors():
                ready, why = self.index.status()
        except (SchemaError, sa_exc.ProgrammingError) as exc:
            ready, why = False, str(exc).splitlines()[0]
        self._index_state = (ready, why, time.monotonic())
        return self._index_state

    def _recheck_index(self):
        try:
            self._check_index()
        except CrmUnavailable as exc:       # the lookups say so; keep the last answer until next time
            log.debug("phone index check failed: %s", exc)
            self._index_state = self._index_state[:2] + (time.monotonic(),)
        finally:
            self._rechecking = None

    def _search_index(self, caller, explain):
        """The index rows of every module joined to their records: ONE statement, one round trip."""
        tail = phone.suffix(caller, self.rules.suffix_digits)
        key = phone.suffix(caller, min(self.rules.suffix_digits, KEY_DIGITS))
        if not (key.isascii() and key.isdigit()):
            return None, []
        queries = self._module_queries()
        union, read = self._index_sql()
        with _database_errors(), self.engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()
            try:
                rows = read.rows(conn.connection, cursor, key[::-1] + "%")
                dialects.of(self.engine).end_read(conn.connection.driver_connection)
            except self._dbapi.Error as exc:
                driver_error(self.engine, exc)
                # The index table dropped since, or a key its hints name (crmsync/records.py) gone:
                # the index is unusable and the lookup scans, rather than every call failing.
                if isinstance(exc, self._dbapi.ProgrammingError) or dialects.of(self.engine).is_missing_key(exc):
                    raise sa_exc.ProgrammingError("phone index lookup", None, exc) from exc
                raise CrmUnavailable("CRM database unavailable: %s" % exc) from exc
            finally:
                cursor.close()
        records = [{} for _ in queries]          # per module: record id -> its row
        fields = [{} for _ in queries]           # per module: record id -> the index fields
        counts = [0] * len(queries)
        for row in rows:
            position, field = int(row[0]), row[1]
            own = union.own_row(queries[position], row)
            records[position].setdefault(own[0], own)
            fields[position].setdefault(own[0], set()).add(field)
            counts[position] += 1
        explain.append("index: %d candidate(s)%s ending in %s%s" % (
            len(rows), " (capped)" if max(counts) >= MAX_CANDIDATES else "", tail,
            "".join(", %s %d" % (q.spec.name, len(r)) for q, r in zip(queries, records) if r)))
        for query, found, named in zip(queries, records, fields):
            if not found:
                continue
            # Only the columns the index named can end in the caller's digits: parse just those.
            matches = self._matches(query.spec, query.names, list(found.values()), caller, named)
            explain.append("%s: %d live record(s) joined to the index, %d matching column(s)" % (
                query.spec.name, len(found), len(matches)))
            if matches:
                return query.spec, matches
        return None, []

    def _index_sql(self):
        """Every module's ``by_index`` as one UNION, compiled once: (IndexUnion, how it is read:
        prepared on MariaDB, see crmsync/prepared.py)."""
        if self._index_compiled is None:
            union = index_union(self._module_queries(), dialects.of(self.engine).json_rows)
            compiled = union.statement.compile(dialect=self.engine.dialect)
            sql, params = dialects.of(self.engine).driver_statement(compiled)
            self._index_compiled = (union, prepared.read_for(self.engine, union.statement, sql, params, "p"))
        return self._index_compiled

    def _search_scan(self, caller, explain):
        pattern = "%" + phone.suffix(caller, self.rules.suffix_digits) + "%"
        with _database_errors(), self.engine.connect() as conn:
            for query in self._module_queries():
                spec = query.spec
                rows = conn.execute(query.scan, {"p": pattern}).all()
                matches = self._matches(spec, query.names, rows, caller)
                explain.append("%s: %s.{%s} digits LIKE %r: %d candidate(s)%s, %d matching column(s)" % (
                    spec.name, spec.table, ",".join(spec.phone_fields), pattern, len(rows),
                    " (capped)" if len(rows) >= MAX_SCAN_ROWS else "", len(matches)))
                if matches:
                    return spec, matches
        return None, []

    def _module_queries(self):
        if self._queries is None:     # built once; building twice at start-up is harmless
            tables = self._checked_tables()
            self._queries = [module_query(spec, tables) for spec in self.rules.modules]
        return self._queries

    def _matches(self, spec, names, rows, caller, only=None):
        rules, found = self.rules, []
        first_phone = 3 + len(names)
        extra = first_phone + len(spec.phone_fields)     # account name, when selected
        for row in rows:
            record_id, owner_id, modified = row[0], row[1 + len(names)], row[2 + len(names)]
            name = " ".join(str(part).strip() for part in row[1:1 + len(names)] if part and str(part).strip())
            account = row[extra] if len(row) > extra else None
            wanted = only.get(record_id, ()) if only is not None else spec.phone_fields
            for index, column in enumerate(spec.phone_fields):
                if column not in wanted:
                    continue
                stored = phone.parse(row[first_phone + index], rules.default_region)
                rule = stored and phone.match(caller, stored, rules.suffix_digits, rules.internal_max_digits)
                if rule:
                    key = (phone.strength(rule), index, _recency(modified), record_id)
                    found.append(_Match(key, record_id, name, account, owner_id, column, stored.raw, rule))
        return found

    def _found(self, number, caller, spec, matches, explain):
        best = matches[0]
        explain.append("%s %s %r: %s %r matches by %s" % (
            spec.name, best.record_id, best.name, best.column, best.stored, best.rule))
        for other in matches[1:4]:
            explain.append("  lost the tie-break (rule, column order, newest, smallest id): %s %s %r (%s)" % (
                other.record_id, other.column, other.stored, other.rule))
        entry = self._users_map().by_id.get(best.owner_id) if best.owner_id else None
        owner = entry.user if entry else None
        if entry:
            explain.append("owner %s (%s), extension %s%s" % (
                owner.user_name, owner.full_name, owner.extension or "none",
                " (%s: not an extension)" % entry.dropped if entry.dropped else ""))
        else:
            explain.append("owner %s is not an active user" % best.owner_id if best.owner_id
                           else "the record has no assigned user")
        found = Caller(module=spec.name, record_id=best.record_id, name=best.name,
                       account_name=best.account_name, owner=owner, column=best.column,
                       stored_number=best.stored, rule=best.rule)
        return LookupResult("found", number, caller.e164, found, tuple(explain))

    def record_with_number(self, module, record_id, number) -> Optional[Caller]:
        """The live record ``record_id`` of a configured module, when one of its phone columns
        is ``number`` (click-to-call: the page says which record a number was clicked on; two
        records may share a number, so the lookup's tie-break would not do).  None otherwise."""
        query = next((q for q in self._module_queries() if q.spec.name == module), None)
        caller = phone.parse(number, self.rules.default_region)
        if query is None or caller is None:
            return None
        with _database_errors(), self.engine.connect() as conn:
            rows = conn.execute(query.by_id, {"ids": [record_id]}).all()
        matches = self._matches(query.spec, query.names, rows, caller)
        return self._found(number, caller, query.spec, sorted(matches), []).caller if matches else None

    # -- users -----------------------------------------------------------------

    def user(self, user_id) -> Optional[User]:
        entry = self._users_map().by_id.get(user_id)
        return entry.user if entry else None

    def user_by_extension(self, ext) -> Optional[User]:
        value, _ = _extension(ext, self.rules.internal_max_digits)
        return self._users_map().by_extension.get(value) if value else None

    def users(self) -> list:
        """Every active user, by user name (`crmagi users list`)."""
        return sorted((entry.user for entry in self._users_map().by_id.values()), key=lambda u: u.user_name)

    def staff(self) -> list:
        """The phone book: active people (not group or portal users) with an extension, by full name
        (from the cached users map)."""
        users = (entry.user for entry in self._users_map().by_id.values())
        return sorted((u for u in users if u.extension and u.person),
                      key=lambda u: (u.full_name.casefold(), u.extension, u.id))

    def _users_map(self):
        users = self._users
        if users is not None and time.monotonic() - users.loaded_at < self.users_cache_seconds:
            return users
        with self._users_lock:
            if self._users is not users:      # another greenlet refreshed it meanwhile
                return self._users
            try:
                self._users = self._load_users()
            except CrmUnavailable:
                if users is None:
                    raise
                # Stale users beat no users; try again after another period.
                log.warning("CRM users could not be refreshed; keeping the ones loaded before", exc_info=True)
                self._users = users._replace(loaded_at=time.monotonic())
            return self._users

    def _load_users(self):
        tables = self._checked_tables()
        users, field = tables["users"], self.rules.extension_field
        if field in users.c:
            source, ext_column, where = users, users.c[field], "users." + field
        else:
            cstm = tables["users_cstm"]
            source, ext_column = users.outerjoin(cstm, cstm.c.id_c == users.c.id), cstm.c[field]
            where = "users_cstm." + field
        # Department and title only feed the phone book: older schemas without them still work.
        extras = [users.c[name] for name in _USER_EXTRAS if name in users.c]
        flags = [users.c[name] for name in _NOT_PEOPLE if name in users.c]
        stmt = (select(users.c.id, users.c.user_name, users.c.first_name, users.c.last_name, ext_column,
                       *extras, *flags)
                .select_from(source)
                .where(users.c.deleted == 0, users.c.status == "Active")
                .order_by(users.c.id))
        with _database_errors(), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        with _database_errors():
            prefs = UserPrefs(self.engine).load()
        by_id, by_extension = {}, {}
        for user_id, user_name, first, last, raw, *extra in rows:
            extension, reason = _extension(raw, self.rules.internal_max_digits)
            full_name = " ".join(part for part in (first, last) if part) or user_name
            details = {column.name: (value or "").strip() for column, value in zip(extras, extra)}
            person = not any(extra[len(extras):])
            mine = prefs.get(user_id, Prefs())
            user = User(id=user_id, user_name=user_name, full_name=full_name, extension=extension,
                        devices=mine.devices, agents=mine.agents, popups=mine.popups, person=person, **details)
            by_id[user_id] = _UserEntry(user, "%s %s" % (where, reason) if reason else None)
            if extension:
                # Two users sharing an extension is a CRM mistake; the smallest id keeps it.
                by_extension.setdefault(extension, user)
        for entry in by_id.values():        # a CRM extension wins over a device or agent id
            for other in entry.user.devices + entry.user.agents:
                by_extension.setdefault(other, entry.user)
        return _Users(by_id, by_extension, time.monotonic())
