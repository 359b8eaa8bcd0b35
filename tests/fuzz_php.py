"""The SuiteCRM hook under php-cli, for fuzzing what it reads (the request, the user, the clock,
the installed config) without a SuiteCRM: one php process answers one JSON line per input.

The hook is rendered by the installer (webpush/installer.py) as `crmagi suitecrm install`
writes it; the secret goes through ``installer.php_string`` as config.php gets it, so the
Python side's literal quoting is fuzzed too.  The token the PHP side mints must verify with
the Python side's ``auth.verify`` for the same user (the two implementations must agree).
"""
import json
import select
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from webpush import auth, installer

PHP = shutil.which("php") or "/usr/bin/php"
HARNESS = r"""<?php
define('sugarEntry', true);
require $argv[1];
$errors = array();
set_error_handler(function ($no, $text) use (&$errors) { $errors[] = $text; return true; });
while (($line = fgets(STDIN)) !== false) {
    $errors = array();
    $in = json_decode($line, true);
    $out = array();
    try {
        $config = $in['config'];
        $secret = eval('return ' . $in['secret_literal'] . ';');
        $out['secret_ok'] = $secret === $config['secret'];
        $config['secret'] = $secret;
        $out['full'] = CrmagiPopupHook::isFullPage($in['request']);
        $out['html'] = CrmagiPopupHook::render($config, $in['user_id'], $in['user_name'], $in['now']);
    } catch (Throwable $e) {
        $errors[] = get_class($e) . ': ' . $e->getMessage();
    }
    $out['errors'] = $errors;
    echo json_encode($out, JSON_PARTIAL_OUTPUT_ON_ERROR), "\n";
}
"""
PREFIX, SUFFIX = "<script>window.crmagiConfig = ", ";</script>\n"


class PhpHook:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="crmagi-fuzz-php-"))
        rendered = installer._render({"secret": "s", "ws_url": "ws://x/ws", "token_seconds": 600, "version": "1"})
        (self.dir / "hook.php").write_bytes(rendered[installer.HOOK_FILE])
        (self.dir / "harness.php").write_text(HARNESS)
        self.proc = None

    def ask(self, given, timeout=10.0):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([PHP, str(self.dir / "harness.php"), str(self.dir / "hook.php")],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        line = dict(given, secret_literal=installer.php_string(given["config"]["secret"]))
        self.proc.stdin.write(json.dumps(line).encode() + b"\n")
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            self.proc.kill()
            raise TimeoutError("php gave no answer within %.0fs" % timeout)
        answer = self.proc.stdout.readline()
        assert answer, "php died"
        return json.loads(answer)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@lru_cache(maxsize=None)
def hook():
    return PhpHook()


def full_page(request):
    """What isFullPage must say, written again in Python from the hook's comment."""
    action = request.get("action")
    if isinstance(action, str) and action.lower() == "popup":
        return False
    return not any(_php_truthy(request.get(key)) for key in ("to_pdf", "sugar_body_only", "ajax_load"))


def _php_truthy(value):
    return value not in (None, False, 0, "", "0", [], {})


def check_hook(given):
    """No PHP warning or error; the page/popup decision; a script element the user's name cannot
    break out of; a token the Python side accepts for the same user."""
    out = hook().ask(given)
    assert out["errors"] == [] and out["secret_ok"], out
    assert out["full"] == full_page(given["request"]), (given["request"], out["full"])
    html = out["html"]
    assert html.startswith(PREFIX) and html.count("<script") == 3 and html.count("</script>") == 3, html
    text = html[len(PREFIX):html.index(SUFFIX)]
    assert not set(text) & set("<>&'"), text
    page = json.loads(text)
    assert page["user"] == given["user_id"] and page["userName"] == given["user_name"]
    if given["user_id"] in ("", "0"):      # empty() in PHP: afterUiFrame never renders for them
        return
    claims = auth.verify(given["config"]["secret"], page["token"], given["now"])
    assert claims.user_id == given["user_id"] and claims.expires_at == page["tokenExpires"]
