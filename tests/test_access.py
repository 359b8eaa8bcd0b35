"""Who may view a record, as SuiteCRM's role ACL decides it (pure rules of crmsync/access.py)."""
import pytest

from crmsync.access import Role, effective, may_view, view_scope

U, G = True, False          # a role held directly, or through a security group


@pytest.mark.parametrize("default, roles, level", [
    (90, [], 90),                             # no role: the action's default
    (None, [], None),                         # no acl_actions row: the module has no ACL
    (90, [Role(U, 75)], 75),
    (90, [Role(U, 75), Role(U, 80)], 80),     # roles add up: the most permissive wins
    (90, [Role(U, -99), Role(U, None)], -99),  # a role that sets nothing does not count
    (90, [Role(U, 0)], 90),                   # 0 is "Not Set": the default
    (89, [Role(U, -98)], -98),
    (90, [Role(G, -99), Role(G, 80)], 80),    # group roles add up too
    (90, [Role(U, -99), Role(G, 90)], -99),   # a direct role takes precedence over group roles
    (90, [Role(U, None), Role(G, 75)], 90),   # ... even one that sets nothing
])
def test_effective_level(default, roles, level):
    assert effective(default, roles) == level


def test_without_additive_roles_the_least_permissive_wins_and_without_precedence_groups_count():
    roles = [Role(U, 80), Role(G, 75)]
    assert effective(90, roles, additive=False, user_role_precedence=False) == 75
    assert effective(90, roles, additive=True, user_role_precedence=False) == 80
    assert effective(90, [Role(U, -99), Role(G, 90)], user_role_precedence=False) == 90


@pytest.mark.parametrize("is_admin, levels, scope", [
    (True, {"access": -98, "view": -99}, "all"),
    (False, {"access": 89, "view": 90}, "all"),
    (False, {"access": 89, "view": 80}, "group"),
    (False, {"access": 89, "view": 75}, "owner"),
    (False, {"access": 89, "view": -99}, "none"),
    (False, {"access": -98, "view": 90}, "none"),                 # the module is disabled for the user
    (False, {"access": -98, "view": 90, "admin": 99}, "all"),     # ... but a module admin has access
    (False, {"access": -98, "view": 90, "admin": 1}, "none"),
    (False, {}, "all"),                                           # a module without ACL
    (False, {"access": 89, "view": 1}, "none"),                   # not a view level SuiteCRM knows
])
def test_view_scope(is_admin, levels, scope):
    assert view_scope(is_admin, levels) == scope


@pytest.mark.parametrize("scope, owner, group, allowed", [
    ("all", False, False, True),
    ("owner", True, False, True),
    ("owner", False, True, False),
    ("group", False, True, True),
    ("group", True, False, True),
    ("group", False, False, False),
    ("none", True, True, False),
])
def test_may_view(scope, owner, group, allowed):
    assert may_view(scope, owner, group) is allowed
