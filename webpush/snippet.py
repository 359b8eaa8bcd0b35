"""What the SuiteCRM hook prints into a page, made in Python (the demo and the benchmark).

Byte for byte the output of ``CrmagiPopupHook::render`` (webpush/suitecrm/
CrmagiPopupHook.php.j2); tests/test_suitecrm_package.py compares the two with php-cli.
"""
import json

from . import auth

ASSETS = "custom/include/Crmagi"
# PHP's JSON_HEX_TAG|JSON_HEX_AMP|JSON_HEX_APOS|JSON_HEX_QUOT: nothing in a value can end the script.
_HEX = (("<", "\\u003C"), (">", "\\u003E"), ("&", "\\u0026"), ("'", "\\u0027"), ('\\"', "\\u0022"))


def _string(value):
    text = json.dumps(value)[1:-1]
    for plain, escaped in _HEX:
        text = text.replace(plain, escaped)
    return '"%s"' % text


def _value(value):
    return _string(value) if isinstance(value, str) else json.dumps(value)


def render(secret, ws_url, token_seconds, version, user_id, user_name, now):
    token = auth.mint(secret, user_id, now, token_seconds)
    fields = (("user", user_id), ("userName", user_name), ("ws", ws_url), ("token", token),
              ("tokenExpires", int(now) + int(token_seconds)), ("version", version))
    config = "{%s}" % ",".join('"%s":%s' % (key, _value(value)) for key, value in fields)
    version = _quote(version)
    assets = "".join('<link rel="stylesheet" href="%s/%s.css?v=%s">\n<script src="%s/%s.js?v=%s"></script>\n'
                     % (ASSETS, name, version, ASSETS, name, version) for name in ("popup", "recordings"))
    return '<script>window.crmagiConfig = %s;</script>\n' % config + assets


def _quote(version):
    from urllib.parse import quote

    return quote(version, safe="-_.~")        # PHP rawurlencode
