"""Which CRM records a user may view, as SuiteCRM 7.14.6 decides it, and the recordings of Calls.

The rules (pure functions below) follow SuiteCRM's own code: ``SugarBean::ACLAccess``,
``ACLAction::getUserActions``/``userHasAccess``/``hasAccess`` and
``SecurityGroup::groupHasAccess``:

- an admin (``users.is_admin``) views everything; a user who is not active
  (deleted = 0, status Active) views nothing;
- a module's ``access`` action below 89 (enabled) hides the whole module,
  unless its ``admin`` action gives the user 99 or more (module admin);
- its ``view`` action: 90 all, 80 group (the owner, or a member of a security
  group that holds the record), 75 owner, anything else none.  The owner is the
  record's ``assigned_user_id``, or its ``created_by`` when none is assigned;
- a level comes from the user's roles: the direct ones (``acl_roles_users``)
  and, unless the user has a direct role (``securitysuite_user_role_precedence``),
  those of the user's security groups (``securitygroups_acl_roles``).  A role
  that leaves the action "Not Set" (0, or no row) does not count; of the roles
  that set it the most permissive wins (``securitysuite_additive``; the least
  permissive without it); the action's default applies when no role sets it;
- a module without ``acl_actions`` rows has no ACL (SuiteCRM creates them for
  every module that has one): everyone views it.
"""
from typing import Dict, Iterable, NamedTuple, Optional

from sqlalchemy import and_, or_, select

from .calls import CRMAGI_CALLS
from .db import Schema
from .directory import _database_errors

ALLOW_ADMIN, ALLOW_ALL, ALLOW_ENABLED, ALLOW_GROUP, ALLOW_OWNER = 99, 90, 89, 80, 75
NOT_SET = 0
ACTIONS = ("access", "view", "admin")
TABLES = ("users", "calls", "acl_actions", "acl_roles_actions", "acl_roles_users", "securitygroups",
          "securitygroups_users", "securitygroups_acl_roles", "securitygroups_records")
# What popups cannot decide without (`crmagi check`); security groups are optional (SugarCRM CE 6.5 has none).
REQUIRED_COLUMNS = {"users": ("id", "is_admin", "status", "deleted"),
                    "acl_actions": ("id", "name", "category", "acltype", "aclaccess", "deleted"),
                    "acl_roles_actions": ("role_id", "action_id", "access_override", "deleted"),
                    "acl_roles_users": ("role_id", "user_id", "deleted")}
REQUIRED = tuple(REQUIRED_COLUMNS)
MAX_CALLS = 100


class Role(NamedTuple):
    direct: bool                 # acl_roles_users, else through a security group
    override: Optional[int]      # its acl_roles_actions.access_override for the action, None when no row


def effective(default: Optional[int], roles: Iterable[Role], additive=True, user_role_precedence=True):
    """One action's level for a user (None: the module has no such action, hence no ACL)."""
    roles = list(roles)
    if user_role_precedence and any(role.direct for role in roles):
        roles = [role for role in roles if role.direct]
    levels = [int(role.override) for role in roles if role.override not in (None, NOT_SET)]
    if not levels:
        return default
    return max(levels) if additive else min(levels)


def view_scope(is_admin: bool, levels: Dict[str, Optional[int]]) -> str:
    """all | group | owner | none, from the effective access/view/admin levels of one module."""
    access, view, admin = (levels.get(name) for name in ACTIONS)
    if is_admin or (access is None and view is None):
        return "all"
    if admin is not None and admin >= ALLOW_ADMIN:
        access = admin                      # ACLAction::getUserAccessLevel: a module admin has access
    if access is None or access < ALLOW_ENABLED:
        return "none"
    return {ALLOW_ALL: "all", ALLOW_GROUP: "group", ALLOW_OWNER: "owner"}.get(view, "none")


def may_view(scope: str, is_owner: bool, in_group: bool) -> bool:
    return scope == "all" or (scope in ("owner", "group") and is_owner) or (scope == "group" and in_group)


class RecordAccess:
    """``can_view(user_id, module, table, record_id)`` for any module's record, and
    ``recordings(user_id, call_ids)`` for the Calls the user may see."""

    def __init__(self, engine, additive=True, user_role_precedence=True):
        self.engine = engine
        self.additive = additive
        self.user_role_precedence = user_role_precedence
        self._schema = Schema(engine, TABLES)
        self._records = {}          # table name -> Schema of that module's table

    def can_view(self, user_id: str, module: str, table: str, record_id: str) -> bool:
        with _database_errors():
            tables = self._tables()
            with self.engine.connect() as conn:
                scope = self._user_scope(conn, tables, user_id, module)
                if scope in (None, "none"):
                    return False
                if scope == "all":
                    return True
                if table not in self._records:
                    self._records[table] = Schema(self.engine, [table])
                records = self._records[table].table(table)
                owned = conn.execute(select(self._owned(records, user_id)).where(
                    records.c.id == record_id, records.c.deleted == 0)).scalar()
                return may_view(scope, bool(owned), scope == "group" and not owned and self._in_group(
                    conn, tables, user_id, module, record_id))

    def recordings(self, user_id: str, call_ids) -> Optional[Dict[str, str]]:
        """{call id: recorded path} of the Calls the user may see that have a recording;
        None when the user is not an active CRM user."""
        call_ids = [c for c in dict.fromkeys(call_ids) if isinstance(c, str) and c][:MAX_CALLS]
        with _database_errors():
            tables = self._tables()
            self._schema.table("calls")
            with self.engine.connect() as conn:
                scope = self._user_scope(conn, tables, user_id, "Calls")
                if scope is None:
                    return None
                if not call_ids or scope == "none":
                    return {}
                return self._visible(conn, tables, user_id, call_ids, scope)

    # -- the user's level ------------------------------------------------------

    def _tables(self):
        tables = self._schema.tables()
        for name in REQUIRED:
            self._schema.table(name)        # SchemaError naming the table
        return tables

    def _user_scope(self, conn, tables, user_id, module):
        """The user's view scope in ``module``; None when the user is not active."""
        users = tables["users"]
        user = conn.execute(select(users.c.is_admin).where(
            users.c.id == user_id, users.c.deleted == 0, users.c.status == "Active")).first()
        if user is None:
            return None
        if user.is_admin:
            return "all"
        roles = self._roles(conn, tables, user_id)
        actions, overrides = tables["acl_actions"], tables["acl_roles_actions"]
        on = and_(overrides.c.action_id == actions.c.id, overrides.c.deleted == 0,
                  overrides.c.role_id.in_(list(roles) or [""]))
        rows = conn.execute(
            select(actions.c.name, actions.c.aclaccess, overrides.c.role_id, overrides.c.access_override)
            .select_from(actions.outerjoin(overrides, on))
            .where(actions.c.category == module, actions.c.acltype == "module",
                   actions.c.name.in_(ACTIONS), actions.c.deleted == 0)).all()
        defaults, set_by = {}, {}
        for row in rows:
            defaults[row.name] = row.aclaccess
            if row.role_id is not None:
                set_by[(row.name, row.role_id)] = row.access_override
        levels = {name: effective(default, [Role(direct, set_by.get((name, role)))
                                            for role, direct in roles.items()],
                                  self.additive, self.user_role_precedence)
                  for name, default in defaults.items()}
        return view_scope(False, levels)

    def _roles(self, conn, tables, user_id):
        """role id -> True when the user holds it directly, False through a security group only."""
        direct = tables["acl_roles_users"]
        found = {row[0]: False for row in conn.execute(self._group_roles(tables, user_id))} \
            if self._has_groups(tables, "securitygroups_acl_roles") else {}
        found.update((row[0], True) for row in conn.execute(
            select(direct.c.role_id).where(direct.c.user_id == user_id, direct.c.deleted == 0)))
        return found

    @staticmethod
    def _has_groups(tables, *names):
        """SugarCRM CE 6.5 has no security groups."""
        return all(name in tables for name in ("securitygroups_users",) + names)

    @staticmethod
    def _group_roles(tables, user_id):
        members, group_roles = tables["securitygroups_users"], tables["securitygroups_acl_roles"]
        return (select(group_roles.c.role_id)
                .join(members, members.c.securitygroup_id == group_roles.c.securitygroup_id)
                .where(members.c.user_id == user_id, members.c.deleted == 0, group_roles.c.deleted == 0))

    # -- the record's side -------------------------------------------------------

    @staticmethod
    def _owned(records, user_id):
        """SugarBean::isOwner: the assigned user, or the creator when nobody is assigned."""
        assigned = records.c.assigned_user_id
        mine = assigned == user_id
        if "created_by" in records.c:
            mine = or_(mine, and_(or_(assigned.is_(None), assigned == ""), records.c.created_by == user_id))
        return mine

    def _group_records(self, tables, user_id, module):
        """Ids of the module's records held by a security group the user belongs to."""
        records, members = tables["securitygroups_records"], tables["securitygroups_users"]
        query = (select(records.c.record_id)
                 .join(members, members.c.securitygroup_id == records.c.securitygroup_id)
                 .where(records.c.module == module, records.c.deleted == 0,
                        members.c.user_id == user_id, members.c.deleted == 0))
        groups = tables.get("securitygroups")
        if groups is not None:
            query = query.join(groups, groups.c.id == records.c.securitygroup_id).where(groups.c.deleted == 0)
        return query

    def _in_group(self, conn, tables, user_id, module, record_id):
        if not self._has_groups(tables, "securitygroups_records"):
            return False
        query = self._group_records(tables, user_id, module)
        return conn.execute(query.where(tables["securitygroups_records"].c.record_id == record_id)
                            .limit(1)).first() is not None

    def _visible(self, conn, tables, user_id, call_ids, scope):
        calls = tables["calls"]
        query = (select(CRMAGI_CALLS.c.call_id, CRMAGI_CALLS.c.recording)
                 .join(calls, calls.c.id == CRMAGI_CALLS.c.call_id)
                 .where(CRMAGI_CALLS.c.call_id.in_(call_ids), calls.c.deleted == 0,
                        CRMAGI_CALLS.c.recording.is_not(None), CRMAGI_CALLS.c.recording != ""))
        if scope != "all":
            mine = self._owned(calls, user_id)
            if scope == "group" and self._has_groups(tables, "securitygroups_records"):
                mine = or_(mine, calls.c.id.in_(self._group_records(tables, user_id, "Calls")))
            query = query.where(mine)
        return {row.call_id: row.recording for row in conn.execute(query)}
