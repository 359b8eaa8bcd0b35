"""Tier a: browser input that once escaped the websocket code's documented errors (bench/fuzz.py found
each); every one must end as BadMessage or TokenError, which the server answers with a refusal."""
import pytest

from webpush import auth, messages

SECRET = "test-secret"


def test_deeply_nested_json_is_a_bad_message():
    with pytest.raises(messages.BadMessage):
        messages.decode("[" * 3000)          # RecursionError in json, under MAX_MESSAGE


def signed(payload_json):
    payload = auth._b64(payload_json.encode())
    return payload + "." + auth._sign(SECRET, payload)


@pytest.mark.parametrize("token", [
    signed('{"v":1,"uid":"u","iat":1795699120,"exp":Infinity}'),        # OverflowError from int()
    signed('{"v":1,"uid":"u","iat":-Infinity,"exp":1795699720}'),
    signed('{"v":1,"uid":"u","iat":1e400,"exp":1e400}'),
    "eyJ2Ij\u00e9\u00e9LCJ1aWQiOiJ1MSJ9.942759df469f227ae504a497c7226f18",  # UnicodeEncodeError: non-ASCII payload
    "eyJ2IjoxfQ.9\u00e9N\u00e9",                                       # TypeError: non-ASCII signature
])
def test_tokens_that_are_not_ascii_or_carry_infinite_times_are_refused(token):
    with pytest.raises(auth.TokenError):
        auth.verify(SECRET, token, 1795699200)


def test_a_close_frame_without_a_status_code_closes_quietly():
    """Found by bench/fuzz.py: an empty close frame (what a browser's ws.close() sends) made the
    server's close() slice None: a TypeError instead of a closed socket."""
    from webpush.server import _BoundedWebSocket

    class Stream:
        written = []

        def read(self, size, data=[b"\x88\x80\x00\x00\x00\x00"]):     # FIN + close, masked, no payload
            chunk, data[0] = data[0][:size], data[0][size:]
            return chunk

        def write(self, data):
            self.written.append(data)

    ws = _BoundedWebSocket({}, Stream(), None)
    assert ws.receive() is None and ws.closed
