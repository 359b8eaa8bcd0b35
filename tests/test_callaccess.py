"""Who may see a Call, as SuiteCRM's role ACL decides it (pure rules)."""
import pytest

from crmsync.callaccess import effective, view_scope


@pytest.mark.parametrize("default, overrides, level", [
    (90, [], 90),                 # no role: the action's default
    (None, [], 90),               # no acl_actions row (a bare schema): SuiteCRM's default, all
    (90, [75], 75),
    (90, [75, 80], 80),           # roles add up: the most permissive wins
    (90, [-99, None], 90),        # a role that sets nothing falls back to the default
    (90, [0], 90),                # 0 is "Not Set"
    (89, [-98], -98),
])
def test_effective_level(default, overrides, level):
    assert effective(default, overrides) == level


@pytest.mark.parametrize("is_admin, access, view, scope", [
    (True, -98, -99, "all"),
    (False, 89, 90, "all"),
    (False, 89, 80, "group"),
    (False, 89, 75, "owner"),
    (False, 89, -99, "none"),
    (False, -98, 90, "none"),     # the Calls module is disabled for the user
])
def test_view_scope(is_admin, access, view, scope):
    assert view_scope(is_admin, access, view) == scope
