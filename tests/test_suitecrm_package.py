"""The SuiteCRM package (webpush/suitecrm/*.j2) and its installer, on a fake SuiteCRM tree.

The PHP files are executed with the real php binary by a small harness that does
what SuiteCRM does: define sugarEntry, load the hook registration into
$hook_array, include the class file it names and call the method.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gevent.monkey import get_original

from conftest import UNDER_CI
from webpush import auth, snippet, installer

PHP = shutil.which("php") or "/usr/bin/php"
needs_php = pytest.mark.skipif(not os.path.exists(PHP) and not UNDER_CI,
                               reason="php-cli not installed (%s missing)" % PHP)
SECRET = "s3cret-s3cret-s3cret"
WS = "wss://crm.example.com/ws"
NORMAL = {"module": "Contacts", "action": "DetailView", "record": "abc"}
USER = {"id": "seed_sally_id", "user_name": "sally"}

HARNESS = r"""<?php
define('sugarEntry', true);
$args = json_decode($argv[1], true);
chdir($args['root']);
$GLOBALS['current_user'] = $args['user'] === null ? null : (object)$args['user'];
$_REQUEST = $args['request'];
if (isset($args['hooks'])) {
    $hook_array = $args['hooks'];
}
for ($i = 0; $i < $args['loads']; $i++) {
    include 'custom/Extension/application/Ext/LogicHooks/crmagi_popup.php';
}
if (!$args['call']) {
    echo json_encode($hook_array);
    exit(0);
}
$entry = null;
foreach ($hook_array['after_ui_frame'] as $hook) {
    if ($hook[1] === 'crmagi popup') {
        $entry = $hook;
    }
}
if ($entry === null || $entry[0] !== 1000) {
    fwrite(STDERR, "crmagi popup is not registered for after_ui_frame\n");
    exit(2);
}
require_once $entry[2];
$object = new $entry[3]();
$object->{$entry[4]}('after_ui_frame', array());
"""


def snapshot(root):
    """Every file (with its bytes' hash) and directory under root."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        tree[rel] = "dir"
        for name in filenames:
            tree[os.path.join(rel, name)] = hashlib.sha256(Path(dirpath, name).read_bytes()).hexdigest()
    return tree


@pytest.fixture
def crm(tmp_path):
    root = tmp_path / "suitecrm"
    for path, text in {"include/entryPoint.php": "<?php // entry\n",
                       "custom/modules/logic_hooks.php": "<?php $hook_array['after_save'][] = array(1, 'x');\n",
                       "custom/include/Other/keep.js": "// not ours\n"}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.fixture
def static(tmp_path):
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "popup.js").write_text("window.crmagiPopup = window.crmagiPopup || {};\n")
    (folder / "popup.css").write_text(".crmagi-popup { position: fixed; }\n")
    (folder / "recordings.js").write_text("window.__crmagiRecordings = window.__crmagiRecordings || {};\n")
    (folder / "recordings.css").write_text(".crmagi-rec { display: inline-flex; }\n")
    return folder


def do_install(root, static, secret=SECRET, **kwargs):
    values = dict(secret=secret, ws_url=WS, token_seconds=600, version="0.1.0", static_dir=static)
    values.update(kwargs)
    return installer.install(root, **values)


def manifest(root):
    return json.loads((root / installer.MANIFEST).read_text())


# --- installer ---------------------------------------------------------------------------------

def test_install_writes_files_and_manifest(crm, static):
    before = snapshot(crm)
    report = do_install(crm, static)
    for path in installer.TARGETS:
        mode = 0o640 if path == installer.CONFIG_FILE else 0o644
        assert stat.S_IMODE((crm / path).stat().st_mode) == mode, path
    assert (crm / installer.ASSET_DIR / "popup.js").read_bytes() == (static / "popup.js").read_bytes()
    listed = manifest(crm)
    assert set(listed["files"]) == set(installer.TARGETS) == set(report.written)
    assert listed["files"][installer.CONFIG_FILE] is None        # no offline guessing of the secret
    registration = (crm / installer.REGISTRATION).read_bytes()
    assert listed["files"][installer.REGISTRATION] == hashlib.sha256(registration).hexdigest()
    assert listed["dirs"] == report.created_dirs
    assert sorted(report.created_dirs) == [
        "custom/Extension", "custom/Extension/application", "custom/Extension/application/Ext",
        "custom/Extension/application/Ext/EntryPointRegistry", "custom/Extension/application/Ext/LogicHooks",
        "custom/include/Crmagi"]
    unchanged = {path: digest for path, digest in snapshot(crm).items() if path in before}
    assert unchanged == before
    assert not [name for name in os.listdir(crm / installer.ASSET_DIR) if name.startswith(".")]
    assert "Quick Repair and Rebuild" in report.lines()[-1]
    assert "index.php?module=Administration&action=repair" in report.lines()[-1]


WWW_DATA = 33         # Debian's web server user and group


def test_secret_file_belongs_to_the_folders_owner_and_group_as_root(crm, static):
    assert os.geteuid() == 0, "the tests run as root (CI does)"
    (crm / installer.CONFIG_FILE).parent.mkdir(parents=True)
    (crm / installer.CONFIG_FILE).write_text("<?php // stale, world-readable\n")
    (crm / installer.CONFIG_FILE).chmod(0o644)
    (crm / installer.MANIFEST).write_text(json.dumps({"files": {installer.CONFIG_FILE: None}, "dirs": []}))
    os.chown(crm, WWW_DATA, WWW_DATA)
    report = do_install(crm, static)
    secret = (crm / installer.CONFIG_FILE).stat()
    assert (secret.st_uid, secret.st_gid, stat.S_IMODE(secret.st_mode)) == (WWW_DATA, WWW_DATA, 0o640)
    assert SECRET in (crm / installer.CONFIG_FILE).read_text()
    for path in installer.TARGETS:
        if path != installer.CONFIG_FILE:       # the others keep their modes and our ownership
            other = (crm / path).stat()
            assert (other.st_uid, stat.S_IMODE(other.st_mode)) == (0, 0o644), path
    assert not report.warnings


@pytest.mark.parametrize("groups, want_gid, warned", [((), 65534, True), ((WWW_DATA,), WWW_DATA, False)])
def test_secret_file_installed_by_a_user_who_is_not_root(static, groups, want_gid, warned, monkeypatch):
    """As nobody: 0640 still; the folder's group when nobody belongs to it, else a warning."""
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        crm, assets = base / "suitecrm", base / "static"
        shutil.copytree(str(static), str(assets))
        # nobody reads the package's templates from here: a checkout under a 0700 folder
        # (mktemp -d) is closed to nobody.
        shutil.copytree(str(installer.TEMPLATES), str(base / "templates"))
        monkeypatch.setattr(installer, "TEMPLATES", base / "templates")
        (crm / "include").mkdir(parents=True)
        (crm / "include/entryPoint.php").write_text("<?php\n")
        for path in (crm, crm / "include"):
            os.chown(path, 65534, WWW_DATA)
        crm.chmod(0o775)
        out = crm / "warnings.json"       # nobody may write there: it owns the folder
        pid = get_original("os", "fork")()     # plain fork: gevent's fork runs hooks we do not need here
        if pid == 0:       # the child becomes nobody, installs, reports its warnings
            code = 1
            try:
                os.setgroups(list(groups))
                os.setgid(65534)
                os.setuid(65534)
                out.write_text(json.dumps(do_install(crm, assets).warnings))
                code = 0
            finally:
                os._exit(code)
        assert get_original("os", "waitpid")(pid, 0)[1] == 0
        warnings = json.loads(out.read_text())
        secret = (crm / installer.CONFIG_FILE).stat()
        assert (secret.st_uid, secret.st_gid, stat.S_IMODE(secret.st_mode)) == (65534, want_gid, 0o640)
        group_warnings = [w for w in warnings if installer.CONFIG_FILE in w]
        assert bool(group_warnings) == warned, warnings
        if warned:
            assert "group nogroup, not www-data like the SuiteCRM folder" in group_warnings[0]
        popup = (crm / installer.ASSET_DIR / "popup.js").stat()
        assert stat.S_IMODE(popup.st_mode) == 0o644
    finally:
        shutil.rmtree(str(base))


def test_reinstall_is_idempotent_and_uninstall_restores_the_tree(crm, static):
    before = snapshot(crm)
    first = do_install(crm, static)
    installed = snapshot(crm)
    second = do_install(crm, static)
    assert second.created_dirs == [] and second.replaced_modified == []
    assert manifest(crm)["dirs"] == first.created_dirs
    assert snapshot(crm) == installed
    report = installer.uninstall(crm)
    assert sorted(report.removed) == sorted(installer.TARGETS)
    assert report.modified == report.missing == report.kept_dirs == []
    assert snapshot(crm) == before
    assert "Quick Repair" in report.lines()[-1]


def test_reinstall_after_a_crash_left_dirs_keeps_first_list(crm, static):
    created = do_install(crm, static).created_dirs
    (crm / installer.HOOK_FILE).unlink()
    do_install(crm, static)
    assert manifest(crm)["dirs"] == created


def test_edited_files_are_reported(crm, static):
    do_install(crm, static)
    (crm / installer.HOOK_FILE).write_text("<?php // edited\n")
    assert do_install(crm, static).replaced_modified == [installer.HOOK_FILE]
    (crm / installer.REGISTRATION).write_text("<?php // edited\n")
    (crm / installer.ASSET_DIR / "popup.css").unlink()
    report = installer.uninstall(crm)
    assert report.modified == [installer.REGISTRATION]
    assert report.missing == [installer.ASSET_DIR + "/popup.css"]
    assert not (crm / installer.REGISTRATION).exists()


def test_uninstall_keeps_what_it_did_not_create(crm, static):
    do_install(crm, static)
    (crm / installer.ASSET_DIR / "notes.txt").write_text("admin's")
    report = installer.uninstall(crm)
    assert (crm / installer.ASSET_DIR / "notes.txt").read_text() == "admin's"
    assert report.kept_dirs == [installer.ASSET_DIR]
    assert (crm / "custom/include/Other/keep.js").exists()
    assert not (crm / "custom/Extension").exists()


def test_uninstall_deletes_only_package_paths_whatever_the_manifest_says(crm, static):
    do_install(crm, static)
    listed = manifest(crm)
    listed["files"]["include/entryPoint.php"] = None
    listed["dirs"].append("custom/modules")
    (crm / installer.MANIFEST).write_text(json.dumps(listed))
    installer.uninstall(crm)
    assert (crm / "include/entryPoint.php").exists() and (crm / "custom/modules/logic_hooks.php").exists()


def test_refuses_to_overwrite_a_file_it_did_not_install(crm, static):
    (crm / installer.ASSET_DIR).mkdir()
    (crm / installer.ASSET_DIR / "popup.js").write_text("someone else's")
    with pytest.raises(installer.InstallError, match="refusing to overwrite custom/include/Crmagi/popup.js"):
        do_install(crm, static)
    assert (crm / installer.ASSET_DIR / "popup.js").read_text() == "someone else's"


def test_refuses_a_folder_that_is_not_suitecrm(tmp_path, static):
    with pytest.raises(installer.InstallError, match="include/entryPoint.php nor sugar_version.php"):
        do_install(tmp_path, static)
    assert list(tmp_path.iterdir()) == [static]
    assert do_install(tmp_path, static, force=True).written
    (tmp_path / "v8/public/legacy/include").mkdir(parents=True)
    (tmp_path / "v8/public/legacy/include/entryPoint.php").write_text("")
    with pytest.raises(installer.InstallError, match="public/legacy"):
        do_install(tmp_path / "v8", static)
    with pytest.raises(installer.InstallError, match="not a directory"):
        do_install(tmp_path / "nowhere", static, force=True)


def test_sugarcrm_65_marker_is_enough(tmp_path, static):
    (tmp_path / "sugar_version.php").write_text("<?php\n")
    assert do_install(tmp_path, static).written


@pytest.mark.parametrize("values, message", [
    ({"secret": ""}, "secret is empty"),
    ({"ws_url": "http://crm/ws"}, "must be ws://"),
    ({"ws_url": "ws://crm/ws x"}, "must be ws://"),
    ({"token_seconds": 0}, "token_seconds"),
])
def test_refuses_bad_values(crm, static, values, message):
    before = snapshot(crm)
    with pytest.raises(installer.InstallError, match=message):
        do_install(crm, static, **values)
    assert snapshot(crm) == before


def test_short_secret_is_a_warning(crm, static):
    assert "fewer than 16 characters" in do_install(crm, static, secret="short").warnings[0]


def test_missing_static_files_are_named(crm, tmp_path):
    with pytest.raises(installer.InstallError, match="popup.js, popup.css, recordings.js, recordings.css"):
        do_install(crm, tmp_path / "empty")


def test_uninstall_without_install(crm):
    with pytest.raises(installer.InstallError, match="no crmagi install here"):
        installer.uninstall(crm)


# --- PHP ---------------------------------------------------------------------------------------

def php(*args, cwd=None):
    done = subprocess.run([PHP, *args], capture_output=True, text=True, timeout=30, cwd=cwd)
    assert done.returncode == 0 and not done.stderr, done.stderr + done.stdout
    return done.stdout


def run_hook(root, user=USER, request=NORMAL, call=True, loads=1, hooks=None):
    script = root.parent / "harness.php"
    script.write_text(HARNESS)
    args = {"root": str(root), "user": user, "request": request, "call": call, "loads": loads}
    if hooks is not None:
        args["hooks"] = hooks
    return php(str(script), json.dumps(args))


def parse(output):
    """The config object and the exact lines the hook must print."""
    start, end = "<script>window.crmagiConfig = ", ";</script>\n"
    assert output.startswith(start)
    text = output[len(start):output.index(end)]
    assert "<" not in text and ">" not in text and "&" not in text
    assert output == (start + text + end
                      + '<link rel="stylesheet" href="custom/include/Crmagi/popup.css?v=0.1.0">\n'
                      + '<script src="custom/include/Crmagi/popup.js?v=0.1.0"></script>\n'
                      + '<link rel="stylesheet" href="custom/include/Crmagi/recordings.css?v=0.1.0">\n'
                      + '<script src="custom/include/Crmagi/recordings.js?v=0.1.0"></script>\n')
    return json.loads(text)


@pytest.fixture
def installed(crm, static):
    do_install(crm, static)
    return crm


@needs_php
@pytest.mark.parametrize("user, request_", [
    (None, NORMAL),
    ({"id": "", "user_name": ""}, {"module": "Users", "action": "Login"}),
    (USER, {"module": "Contacts", "action": "Popup"}),
    (USER, dict(NORMAL, to_pdf="1")),
    (USER, dict(NORMAL, sugar_body_only="1")),
    (USER, dict(NORMAL, ajax_load="1", loadLanguageJS="1")),
])
def test_hook_is_silent_where_no_page_of_its_own(installed, user, request_):
    assert run_hook(installed, user, request_) == ""


@needs_php
@pytest.mark.parametrize("request_", [NORMAL, {"action": "ajaxui"}, {"module": "Home", "action": "index"}])
def test_hook_prints_config_and_assets_on_full_pages(installed, request_):
    before = int(time.time())
    config = parse(run_hook(installed, USER, request_))
    claims = auth.verify(SECRET, config.pop("token"), time.time())
    assert claims.user_id == "seed_sally_id" and before <= claims.issued_at <= time.time()
    assert config == {"user": "seed_sally_id", "userName": "sally", "ws": WS,
                      "tokenExpires": claims.issued_at + 600, "version": "0.1.0"}
    assert claims.expires_at == config["tokenExpires"]


@needs_php
def test_hostile_user_name_and_id_stay_inside_the_script(installed):
    user = {"id": "a'b\"c</script><!--", "user_name": "</script><script>alert(1)</script> & 'x' \u00e9"}
    output = run_hook(installed, user)
    # Only the three closing tags the hook writes itself: nothing from the data ends the element.
    assert output.count("</script>") == 3 and output.count("<script") == 3 and "<!--" not in output
    config = parse(output)
    assert (config["user"], config["userName"]) == (user["id"], user["user_name"])
    assert auth.verify(SECRET, config["token"], time.time()).user_id == user["id"]


@needs_php
def test_secret_with_quotes_and_backslashes(crm, static):
    secret = "it's a \\'tricky\\\\ secret ?> <?php $x \n"
    do_install(crm, static, secret=secret, ws_url="ws://crm.example.com:8089/ws?a='b'")
    config = parse(run_hook(crm))
    assert config["ws"] == "ws://crm.example.com:8089/ws?a='b'"
    assert auth.verify(secret, config["token"], time.time()).user_id == USER["id"]


@needs_php
def test_token_bytes_equal_python_mint(installed):
    uids = ["seed_sally_id", "a/b", "\u00e9\u65e5\U0001f600", "q\"\\'", "\x01\n\t", "</script>"]
    code = ("define('sugarEntry', true); require 'custom/include/Crmagi/CrmagiPopupHook.php';"
            "foreach (json_decode($argv[1]) as $uid) {"
            "    echo CrmagiPopupHook::mintToken($argv[2], $uid, 1700000000, 600), \"\\n\";"
            "}")
    tokens = php("-r", code, "--", json.dumps(uids), SECRET, cwd=installed).splitlines()
    assert tokens == [auth.mint(SECRET, uid, 1700000000, 600) for uid in uids]


@needs_php
def test_php_string_filter_round_trips():
    values = ["plain", "it's", "back\\slash", "\\'", "end\\", "?> <?php", "line\nbreak", "\u00e9"]
    code = "echo json_encode(array(%s));" % ", ".join(installer.php_string(value) for value in values)
    assert json.loads(php("-r", code)) == values


@needs_php
def test_registration_keeps_other_hooks_and_adds_itself_once(installed):
    other = {"after_ui_frame": [[1, "SecurityGroups", "modules/SecurityGroups/AssignGroups.php", "A", "b"]],
             "after_save": [[1, "AOD", "modules/AOD_Index/AOD_LogicHooks.php", "C", "d"]]}
    hooks = json.loads(run_hook(installed, call=False, loads=2, hooks=other))
    assert hooks["after_save"] == other["after_save"]
    assert hooks["after_ui_frame"][0] == other["after_ui_frame"][0]
    ours = [hook for hook in hooks["after_ui_frame"] if hook[1] == "crmagi popup"]
    assert ours == [[1000, "crmagi popup", installer.HOOK_FILE, "CrmagiPopupHook", "afterUiFrame"]]
    fresh = json.loads(run_hook(installed, call=False, loads=1))
    assert fresh == {"after_ui_frame": ours}


@needs_php
def test_php_files_are_guarded_and_lint_clean(installed):
    for path in installer.RENDERED:
        assert "No syntax errors" in php("-l", str(installed / path))
        assert (installed / path).read_text().startswith(
            "<?php\nif (!defined('sugarEntry') || !sugarEntry) die('Not A Valid Entry Point');\n")
        assert php(str(installed / path)) == "Not A Valid Entry Point"
    # The Extension compiler strips "<?php" and "?>" and concatenates: neither may occur inside.
    assert "?>" not in (installed / installer.REGISTRATION).read_text()


@needs_php
def test_hook_prints_nothing_without_config(installed):
    (installed / installer.CONFIG_FILE).unlink()
    assert run_hook(installed) == ""


# --- CLI ---------------------------------------------------------------------------------------

def cli(*args):
    from agi.cli import main

    return CliRunner().invoke(main, ["suitecrm", *args])


def ini(tmp_path, webpush):
    path = tmp_path / "crmagi.ini"
    path.write_text("[webpush]\n" + webpush)
    return str(path)


@pytest.fixture
def config_with_webpush():
    from agi import config as config_mod

    if not hasattr(config_mod.Config(), "webpush"):
        pytest.skip("agi.config has no [webpush] section yet")


@pytest.fixture
def default_static(static, monkeypatch):
    monkeypatch.setattr(installer, "DEFAULT_STATIC", static)


def test_websocket_url_from_listen():
    from types import SimpleNamespace

    from agi.cli.suitecrm import websocket_url
    from agi.errors import ConfigError

    assert websocket_url(SimpleNamespace(public_url="wss://x/ws", listen=("0.0.0.0", 8089))) == "wss://x/ws"
    assert websocket_url(SimpleNamespace(public_url="", listen=("crm.lan", 8089))) == "ws://crm.lan:8089/ws"
    assert websocket_url(SimpleNamespace(public_url="", listen=("::1", 8089))) == "ws://[::1]:8089/ws"
    with pytest.raises(ConfigError, match=r"\[webpush\] public_url: required"):
        websocket_url(SimpleNamespace(public_url="", listen=("0.0.0.0", 8089)))


def test_cli_install_and_uninstall(crm, tmp_path, config_with_webpush, default_static):
    before = snapshot(crm)
    path = ini(tmp_path, "secret = %s\nlisten = 127.0.0.1:8089\ntoken_seconds = 300\n" % SECRET)
    result = cli("install", str(crm), "--config", path)
    assert result.exit_code == 0, result.output
    assert "wrote " + installer.CONFIG_FILE in result.output and "Quick Repair and Rebuild" in result.output
    assert "WARNING browsers on other machines cannot reach ws://127.0.0.1:8089/ws" in result.output
    config = (crm / installer.CONFIG_FILE).read_text()
    assert "'ws' => 'ws://127.0.0.1:8089/ws'" in config and "'token_seconds' => 300" in config
    result = cli("uninstall", str(crm))
    assert result.exit_code == 0, result.output
    assert snapshot(crm) == before


@pytest.mark.parametrize("webpush, message", [
    ("listen = 0.0.0.0:8089\n", "config [webpush] secret: required"),
    ("secret = %s\nlisten = 0.0.0.0:8089\n" % SECRET, "config [webpush] public_url: required"),
])
def test_cli_config_errors(crm, tmp_path, config_with_webpush, webpush, message):
    result = cli("install", str(crm), "-c", ini(tmp_path, webpush))
    assert result.exit_code == 1 and message in result.output
    assert not (crm / "custom/include/Crmagi").exists()


def test_cli_errors_are_one_line(tmp_path):
    result = cli("uninstall", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: %s: no crmagi install here (custom/include/Crmagi/installed.json not found)" % tmp_path]


@needs_php
@pytest.mark.parametrize("user", [USER, {"id": "a'b\"c</script><!--", "user_name": "</script> & 'x' \u00e9 \u4e2d"}])
def test_python_snippet_prints_the_same_bytes_as_the_php_hook(installed, user):
    """The demo and the benchmark use webpush.snippet; it must not drift from the hook."""
    output = run_hook(installed, user)
    issued = auth.verify(SECRET, parse(output)["token"], time.time()).issued_at
    assert snippet.render(SECRET, WS, 600, "0.1.0", user["id"], user["user_name"], issued) == output


TOKEN_HARNESS = r"""<?php
define('sugarEntry', true);
$args = json_decode($argv[1], true);
chdir($args['root']);
include 'custom/Extension/application/Ext/EntryPointRegistry/crmagi_token.php';
$entry = $entry_point_registry['crmagiToken'];
if ($entry['auth'] !== true) {
    fwrite(STDERR, "the entry point must require a logged-in session\n");
    exit(2);
}
$GLOBALS['current_user'] = $args['user'] === null ? null : (object)$args['user'];
require $entry['file'];
"""


def run_token(root, user):
    script = root.parent / "token_harness.php"
    script.write_text(TOKEN_HARNESS)
    return php(str(script), json.dumps({"root": str(root), "user": user}))


@needs_php
def test_token_entry_point_gives_the_logged_in_user_a_fresh_token(installed):
    """popup.js asks it (session cookie) when its token expired while the tab was away."""
    answer = json.loads(run_token(installed, USER))
    claims = auth.verify(SECRET, answer["token"], time.time())
    assert claims.user_id == USER["id"] and answer["tokenExpires"] == claims.expires_at
    assert "error" in json.loads(run_token(installed, {"id": "", "user_name": ""}))
    assert "error" in json.loads(run_token(installed, None))
