"""Signed recording URLs: one user, one Call, an expiry; nothing else passes."""
import base64
import json

import pytest

from webpush import auth, recording_urls as urls

SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000


def test_a_minted_url_names_its_user_call_and_expiry():
    path = urls.mint(SECRET, "seed_sally_id", "call-1", NOW, 600)
    assert path.startswith("/recordings/")
    assert urls.verify(SECRET, path, NOW + 599) == urls.Grant("seed_sally_id", "call-1", NOW + 600)


def test_an_expired_url_is_refused():
    path = urls.mint(SECRET, "u", "c", NOW, 60)
    with pytest.raises(urls.UrlError, match="expired"):
        urls.verify(SECRET, path, NOW + 61)


def _payload(path):
    token = path[len(urls.PREFIX):]
    payload, signature = token.split(".")
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))), signature


def _with_claims(claims, signature):
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return urls.PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


@pytest.mark.parametrize("change", [{"uid": "seed_max_id"}, {"call": "call-2"}, {"exp": NOW + 10 ** 6}])
def test_changing_the_user_the_call_or_the_expiry_breaks_the_signature(change):
    claims, signature = _payload(urls.mint(SECRET, "seed_sally_id", "call-1", NOW, 600))
    with pytest.raises(urls.UrlError, match="bad signature"):
        urls.verify(SECRET, _with_claims(dict(claims, **change), signature), NOW)


def test_another_secret_does_not_verify():
    path = urls.mint(SECRET, "u", "c", NOW, 600)
    with pytest.raises(urls.UrlError, match="bad signature"):
        urls.verify("another-secret-another-secret-00", path, NOW)


def test_a_websocket_token_is_not_a_recording_url_and_the_reverse():
    token = auth.mint(SECRET, "u", NOW, 600)
    with pytest.raises(urls.UrlError):
        urls.verify(SECRET, urls.PREFIX + token, NOW)
    recording = urls.mint(SECRET, "u", "c", NOW, 600)[len(urls.PREFIX):]
    with pytest.raises(auth.TokenError):
        auth.verify(SECRET, recording, NOW)


@pytest.mark.parametrize("path", ["", "/recordings/", "/recordings/abc", "/recordings/a.b.c", "/other/x.y",
                                  "/recordings/" + "a" * 2000 + ".00", "/recordings/é.00", None])
def test_malformed_paths_are_refused(path):
    with pytest.raises(urls.UrlError):
        urls.verify(SECRET, path, NOW)


def test_a_validly_signed_payload_without_a_call_is_refused():
    raw = base64.urlsafe_b64encode(json.dumps({"v": 1, "uid": "u", "exp": NOW + 9}).encode()).rstrip(b"=").decode()
    with pytest.raises(urls.UrlError, match="malformed"):
        urls.verify(SECRET, urls.PREFIX + raw + "." + urls._sign(SECRET, raw), NOW)


def test_no_secret_no_url():
    with pytest.raises(ValueError):
        urls.mint("", "u", "c", NOW, 60)
