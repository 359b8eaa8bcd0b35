"""Roles and security groups written the way SuiteCRM 7.14.6 stores them (ACLRole::setAction,
the acl_roles_users / securitygroups_* relationship rows), for the MariaDB and the peer tests.

``sql(statement, *args)`` runs one statement with ``%s`` parameters (SuiteCrmPeer.sql, or
an engine's exec_driver_sql) and returns the rows of a SELECT.
"""
import uuid

# The module actions SuiteCRM's installer creates per module (ACLAction::addActions) and their defaults.
MODULE_ACTIONS = {"access": 89, "view": 90, "list": 90, "edit": 90, "delete": 90, "import": 90, "export": 90,
                  "massupdate": 90}
NONE, OWNER, GROUP, ALL = -99, 75, 80, 90
NOW = "2026-12-06 10:00:00"


def guid():
    return str(uuid.uuid4())


def add_module_actions(sql, module):
    """acl_actions of a module, as a fresh SuiteCRM has them (the test schema has no rows)."""
    for name, level in MODULE_ACTIONS.items():
        sql("INSERT INTO acl_actions (id, date_entered, date_modified, modified_user_id, created_by, name,"
            " category, acltype, aclaccess, deleted) VALUES (%s, %s, %s, '1', '', %s, %s, 'module', %s, 0)",
            guid(), NOW, NOW, name, module, level)


def action_id(sql, module, name):
    return sql("SELECT id FROM acl_actions WHERE category = %s AND name = %s AND acltype = 'module'"
               " AND deleted = 0", module, name)[0][0]


def role(sql, name, module, **levels):
    """A role setting ``levels`` (action name -> level) of ``module``; the other actions "Not Set"."""
    role_id = guid()
    sql("INSERT INTO acl_roles (id, date_entered, date_modified, modified_user_id, created_by, name,"
        " description, deleted) VALUES (%s, %s, %s, '1', '1', %s, '', 0)", role_id, NOW, NOW, name)
    for action, level in levels.items():
        sql("INSERT INTO acl_roles_actions (id, role_id, action_id, access_override, date_modified, deleted)"
            " VALUES (%s, %s, %s, %s, %s, 0)", guid(), role_id, action_id(sql, module, action), level, NOW)
    return role_id


def give_role(sql, role_id, user_id):
    sql("INSERT INTO acl_roles_users (id, role_id, user_id, date_modified, deleted) VALUES (%s, %s, %s, %s, 0)",
        guid(), role_id, user_id, NOW)


def group(sql, name, users=(), records=(), roles=()):
    """A security group with these members, (module, record id) records and roles."""
    group_id = guid()
    sql("INSERT INTO securitygroups (id, name, date_entered, date_modified, modified_user_id, created_by,"
        " description, deleted, assigned_user_id, noninheritable) VALUES (%s, %s, %s, %s, '1', '1', '', 0, '1', 0)",
        group_id, name, NOW, NOW)
    for user_id in users:
        sql("INSERT INTO securitygroups_users (id, date_modified, deleted, securitygroup_id, user_id,"
            " primary_group, noninheritable) VALUES (%s, %s, 0, %s, %s, 0, 0)", guid(), NOW, group_id, user_id)
    for module, record_id in records:
        sql("INSERT INTO securitygroups_records (id, securitygroup_id, record_id, module, date_modified,"
            " modified_user_id, created_by, deleted) VALUES (%s, %s, %s, %s, %s, '1', '1', 0)",
            guid(), group_id, record_id, module, NOW)
    for role_id in roles:
        sql("INSERT INTO securitygroups_acl_roles (id, securitygroup_id, role_id, date_modified, deleted)"
            " VALUES (%s, %s, %s, %s, 0)", guid(), group_id, role_id, NOW)
    return group_id
