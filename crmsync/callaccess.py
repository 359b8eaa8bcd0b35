"""Which Calls a CRM user may see, and the recording crmagi stored for each.

SuiteCRM decides who sees a Call with its role ACL (docs/suitecrm.md, section 2):
admins see everything; otherwise the Calls module's ``access`` and ``view``
actions, each either a role's override (``acl_roles_actions``) or the action's
default (``acl_actions.aclaccess``).  A user's roles are direct
(``acl_roles_users``) and through security groups; several roles add up, the
most permissive wins (SuiteCRM's default ``securitysuite_additive``).
``view`` levels: 90 all, 80 group (owner, or the Call is in one of the user's
security groups), 75 owner (the assigned user), -99 none; ``access`` -98
disables the module.  Only active users (deleted = 0, status Active) see anything.
"""
from typing import Dict, Iterable, Optional

from sqlalchemy import and_, or_, select

from .calls import CRMAGI_CALLS
from .db import Schema
from .directory import _database_errors

ALLOW_ALL, ALLOW_ENABLED, ALLOW_GROUP, ALLOW_OWNER = 90, 89, 80, 75
NOT_SET = 0
TABLES = ("users", "calls", "acl_actions", "acl_roles_actions", "acl_roles_users", "securitygroups_users",
          "securitygroups_acl_roles", "securitygroups_records")
REQUIRED = TABLES[:5]
MAX_CALLS = 100


def effective(default: Optional[int], overrides: Iterable[Optional[int]]) -> int:
    """One action's level for a user: each role's override (or the default when the role
    sets none), the most permissive of them; the default when the user has no role."""
    base = ALLOW_ALL if default is None else int(default)
    levels = [base if value in (None, NOT_SET) else int(value) for value in overrides]
    return max(levels) if levels else base


def view_scope(is_admin: bool, access: int, view: int) -> str:
    """all | group | owner | none."""
    if is_admin:
        return "all"
    if access < ALLOW_ENABLED:
        return "none"
    if view >= ALLOW_ALL:
        return "all"
    if view >= ALLOW_GROUP:
        return "group"
    if view >= ALLOW_OWNER:
        return "owner"
    return "none"


class CallAccess:
    """``recordings(user_id, call_ids)`` -> {call id: recorded path} of the Calls the user may
    see that have a recording; None when the user is not an active CRM user."""

    def __init__(self, engine):
        self.engine = engine
        self._schema = Schema(engine, TABLES)

    def recordings(self, user_id: str, call_ids) -> Optional[Dict[str, str]]:
        call_ids = [c for c in dict.fromkeys(call_ids) if isinstance(c, str) and c][:MAX_CALLS]
        with _database_errors():
            tables = self._schema.tables()
            for name in REQUIRED:
                self._schema.table(name)        # SchemaError naming the table
            with self.engine.connect() as conn:
                user = conn.execute(select(tables["users"].c.is_admin).where(
                    tables["users"].c.id == user_id, tables["users"].c.deleted == 0,
                    tables["users"].c.status == "Active")).first()
                if user is None:
                    return None
                if not call_ids:
                    return {}
                scope = self._scope(conn, tables, user_id, bool(user.is_admin))
                if scope == "none":
                    return {}
                return self._visible(conn, tables, user_id, call_ids, scope)

    def _roles(self, conn, tables, user_id):
        direct = tables["acl_roles_users"]
        groups, group_roles = tables.get("securitygroups_users"), tables.get("securitygroups_acl_roles")
        roles = select(direct.c.role_id).where(direct.c.user_id == user_id, direct.c.deleted == 0)
        if groups is not None and group_roles is not None:     # SugarCRM CE 6.5 has no security groups
            roles = roles.union(select(group_roles.c.role_id)
                                .join(groups, groups.c.securitygroup_id == group_roles.c.securitygroup_id)
                                .where(groups.c.user_id == user_id, groups.c.deleted == 0,
                                       group_roles.c.deleted == 0))
        return {row[0] for row in conn.execute(roles)}

    def _scope(self, conn, tables, user_id, is_admin):
        if is_admin:
            return "all"
        actions, overrides = tables["acl_actions"], tables["acl_roles_actions"]
        defaults = {row.name: (row.id, row.aclaccess) for row in conn.execute(
            select(actions.c.id, actions.c.name, actions.c.aclaccess).where(
                actions.c.category == "Calls", actions.c.acltype == "module",
                actions.c.name.in_(("access", "view")), actions.c.deleted == 0))}
        roles = self._roles(conn, tables, user_id)
        levels = {}
        for name in ("access", "view"):
            action_id, default = defaults.get(name, (None, None))
            found = []
            if roles and action_id:
                set_by = {row.role_id: row.access_override for row in conn.execute(
                    select(overrides.c.role_id, overrides.c.access_override).where(
                        overrides.c.action_id == action_id, overrides.c.role_id.in_(roles),
                        overrides.c.deleted == 0))}
                found = [set_by.get(role) for role in roles]
            levels[name] = effective(default, found)
        return view_scope(False, levels["access"], levels["view"])

    def _visible(self, conn, tables, user_id, call_ids, scope):
        calls = tables["calls"]
        query = (select(CRMAGI_CALLS.c.call_id, CRMAGI_CALLS.c.recording)
                 .join(calls, calls.c.id == CRMAGI_CALLS.c.call_id)
                 .where(CRMAGI_CALLS.c.call_id.in_(call_ids), calls.c.deleted == 0,
                        CRMAGI_CALLS.c.recording.is_not(None), CRMAGI_CALLS.c.recording != ""))
        if scope != "all":
            mine = calls.c.assigned_user_id == user_id
            records, members = tables.get("securitygroups_records"), tables.get("securitygroups_users")
            if scope == "group" and records is not None and members is not None:
                in_group = (select(records.c.record_id)
                            .join(members, members.c.securitygroup_id == records.c.securitygroup_id)
                            .where(records.c.module == "Calls", records.c.deleted == 0,
                                   members.c.user_id == user_id, members.c.deleted == 0))
                mine = or_(mine, calls.c.id.in_(in_group))
            query = query.where(and_(mine))
        return {row.call_id: row.recording for row in conn.execute(query)}
