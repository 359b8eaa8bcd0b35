"""What each fuzzed parser must do with any input: the properties checked by the CI tests
(tests/test_fuzz_*.py) and by the long run (bench/fuzz.py) alike.

A check takes one generated input and returns quietly, or raises: a documented error escaping
is caught here, so anything that comes out is a finding (an undocumented exception, or an
AssertionError for a broken invariant or round trip).  Strategies: fuzz_strategies.py and
fuzz_text_strategies.py.
"""
import math
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

from hypothesis import strategies as st

import fuzz_strategies as fs
import fuzz_text_strategies as ts
from agi.ami import amiproto
from agi.fastagi import callstate, protocol
from agi import config
from agi.ami.amiclient import AmiClient
from agi.demo.asterisk_commands import parse_args
from agi.ami.callmodel import CallModel, Ended, RingingStopped
from agi.errors import AgiError, AmiError, AmiProtocolError, ConfigError
from agi.fastagi.session import AgiSession
from crmsync import phone
from test_end_to_end import INBOUND
from webpush import auth, messages
from webpush.hub import Tab

_ENV_KEY = re.compile(r"^[a-z0-9_]+$")
_KEY = re.compile(r"\A[A-Za-z][A-Za-z0-9_-]{0,15}\Z")


class FakeSock:
    """recv() hands out the given pieces, then EOF; what is sent is kept."""

    def __init__(self, pieces):
        self.pieces, self.sent = list(pieces), []

    def recv(self, size):
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > size:
            self.pieces.insert(0, piece[size:])
        return piece[:size]

    def sendall(self, data):
        self.sent.append(data)

    def send(self, data):
        self.sent.append(data)
        return len(data)

    def settimeout(self, _):
        pass

    def shutdown(self, _):
        pass

    def close(self):
        pass


# -- AGI -----------------------------------------------------------------------------------
def check_agi_env(data: bytes):
    """parse_env: an AgiEnv or AgiProtocolError; the session reading the same bytes: only AgiError."""
    try:
        env, rest = protocol.parse_env(data)
    except AgiError:
        pass
    else:
        assert data.endswith(rest) and all(_ENV_KEY.match(key) for key in env)
        assert isinstance(env.script, str) and isinstance(env.query, str) and len(env.args) <= len(env)
    try:
        AgiSession(FakeSock([data[i:i + 4096] for i in range(0, len(data), 4096)])).read_env(10)
    except AgiError:
        pass


def check_agi_replies(given):
    """The session sending commands over a stream of any reply bytes: replies or AgiError, never more
    commands than replies can answer."""
    data, cuts = given
    session = AgiSession(FakeSock(fs.pieces(data, cuts)), reply_timeout=10)
    for _ in range(64):
        try:
            reply = session.command(b"GET VARIABLE CALLERID(num)\n")
        except AgiError as exc:
            if type(exc).__name__ in ("AgiClosed", "AgiProtocolError", "AgiTimeout"):
                break
            continue
        assert 100 <= reply.code <= 999 and isinstance(reply.result, int)
        assert reply.value is None or isinstance(reply.value, str)


def check_agi_command(value: str):
    """format_command -> Asterisk's own argument splitting gives the value back (CR/LF/NUL as spaces)."""
    try:
        line = protocol.set_variable("CRM_RECORD_NAME", value)
    except ValueError:
        assert len(protocol.quote(value).encode("utf-8")) > protocol.MAX_COMMAND - 40
        return
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    expected = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    assert parse_args(line[:-1].decode("utf-8")) == ["SET", "VARIABLE", "CRM_RECORD_NAME", expected]


# -- AMI -----------------------------------------------------------------------------------
def _split_all(data):
    try:
        return amiproto.split_frames(data)
    except AmiProtocolError:
        return None


def _split_pieces(pieces):
    frames, buf = [], b""
    try:
        for piece in pieces:
            found, buf = amiproto.split_frames(buf + piece)
            frames += found
    except AmiProtocolError:
        return None
    return frames, buf


class _Recorder:
    def __init__(self):
        self.events = 0

    def on_event(self, message):
        self.events += 1


def check_ami_stream(given):
    """split_frames gives the same frames at any chunk boundary; parse_frame and unescape: a Message
    or AmiProtocolError; the client's read loop over the bytes ends only with an AmiError."""
    data, cuts = given
    try:
        _, data = amiproto.split_banner(data)
    except AmiProtocolError:
        pass
    whole = _split_all(data)
    assert _split_pieces(fs.pieces(data, cuts)) == whole
    for frame in (whole or ([], b""))[0]:
        try:
            message = amiproto.unescape(amiproto.parse_frame(frame))
        except AmiProtocolError:
            continue
        assert message.headers and (message.event or message.response or True) and repr(message)
    client = AmiClient("127.0.0.1", 1, "crm", "secret", _Recorder())
    try:
        client._read_loop(FakeSock(fs.pieces(data, cuts)), b"")
    except AmiError:
        pass


def check_ami_action(given):
    """format_action -> split_frames -> parse_frame gives the headers back, or ValueError for line breaks."""
    action, action_id, headers = given
    if not all(_KEY.match(str(k)) for k in [action] + [h[0] for h in headers]):
        return       # a mutated key: header names are crmagi's own constants, never data
    try:
        data = amiproto.format_action(action, action_id, headers)
    except ValueError:
        assert any("\r" in str(t) or "\n" in str(t) for t in [action, action_id] + [x for h in headers for x in h])
        return
    frames, rest = amiproto.split_frames(data)
    assert rest == b"" and len(frames) == 1
    sent = [("Action", action), ("ActionID", action_id)] + [(k, str(v)) for k, v in headers if v is not None]
    assert amiproto.parse_frame(frames[0]).headers == sent


def ami_actions():
    key = st.from_regex(_KEY)
    return st.tuples(key, ts.TEXT, st.lists(st.tuples(key, st.one_of(ts.TEXT, st.none(), st.integers())),
                                            max_size=5))


def check_call_model(steps):
    """Mutated event sequences: no exception; nothing about a call after its Ended; each
    RingingStopped closes a Ringing; and once every call expired, the model holds nothing."""
    model = CallModel(INBOUND.split(", "), ("from-internal",), (), 14400.0)
    now, ended, ringing = 1795699120.0, set(), set()
    for kind, payload in steps:
        now, out = now + 0.01, []
        if kind == "event":
            out = model.feed(amiproto.Message(payload), now)
        elif kind == "resync":
            out = model.load_channels([amiproto.Message(h) for h in payload], now, set(model.chans))
        elif kind == "expire":
            now += payload
            out = model.expire(now)
        _check_domain(out, ended, ringing)
    for later in (3, 6):      # a call ended by the first expiry leaves a tombstone the second one clears
        _check_domain(model.expire(now + later * model.call_ttl), ended, ringing)
    size = model.size()
    assert not any(size[k] for k in ("calls", "channels", "names", "bridges", "foreign", "tombstones")), size


def _check_domain(events, ended, ringing):
    for event in events:
        assert event.linkedid not in ended, "%r after the call ended" % (event,)
        if isinstance(event, Ended):
            ended.add(event.linkedid)
        elif type(event).__name__ == "Ringing":
            ringing.add((event.linkedid, event.leg_id))
        elif isinstance(event, RingingStopped):
            assert (event.linkedid, event.leg_id) in ringing, "%r without a Ringing" % (event,)
            ringing.discard((event.linkedid, event.leg_id))


# -- websocket -------------------------------------------------------------------------------
class _Service:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


class _Transport:
    def send(self, text):
        assert isinstance(text, str)

    def close(self, *args):
        pass


def check_browser_message(text):
    """decode: a message of a known type with typed fields, or BadMessage; its token: Claims or
    TokenError; the server's handling of it: no exception."""
    from webpush.server import PushServer

    try:
        message = messages.decode(text)
    except messages.BadMessage:
        return
    assert message["type"] in messages.CLIENT_TYPES
    check_token(message.get("token"))
    server = PushServer.__new__(PushServer)
    server.service, server.secret, server.token_seconds = _Service(), ts.SECRET, 600
    server.clock, server.directory, server.recordings = (lambda: ts.NOW), None, None
    tab = Tab(_Transport(), "u1", now=ts.NOW)
    tab.token_expires, tab.session_start, tab.budget, tab.budget_at = ts.NOW + 600, ts.NOW, 40, ts.NOW
    server._handle(tab, message)


def check_token(token):
    try:
        claims = auth.verify(ts.SECRET, token, ts.NOW)
    except auth.TokenError:
        return
    assert isinstance(claims.user_id, str) and claims.user_id
    assert all(isinstance(v, int) for v in claims[1:]) and claims.session_start <= claims.issued_at


def check_ws_frames(data: bytes):
    """The bounded frame reader over any bytes: messages of at most MAX_MESSAGE, or the errors the
    server's _receive turns into a refusal."""
    from geventwebsocket.exceptions import ProtocolError, WebSocketError
    from webpush.server import _BoundedWebSocket

    ws = _BoundedWebSocket({}, _Stream(data), _Handler())
    for _ in range(16):
        try:
            message = ws.receive()
        except (WebSocketError, ProtocolError, UnicodeError):
            return
        if message is None:
            return
        assert len(message) <= messages.MAX_MESSAGE * 4


class _Stream:
    def __init__(self, data):
        self.data, self.at, self.written = data, 0, []

    def read(self, size):
        chunk = self.data[self.at:self.at + size]
        self.at += len(chunk)
        return chunk

    def write(self, data):
        self.written.append(data)


class _Handler:
    class server:
        application = None
    logger = __import__("logging").getLogger("crmagi.fuzz")


# -- config, phone numbers, CRM_CALL --------------------------------------------------------
@lru_cache(maxsize=None)
def _scratch():
    return Path(tempfile.mkdtemp(prefix="crmagi-fuzz-"))


def check_config(given):
    """load(): a Config with finite positive numbers and valid ports, or ConfigError; describe() works."""
    ini, environ = given
    path = _scratch() / "crmagi.ini"
    path.write_bytes(ini)
    try:
        cfg = config.load(str(path), environ=environ)
    except ConfigError:
        return
    assert config.describe(cfg)
    for section in config.SECTIONS:
        for value in vars(getattr(cfg, section)).values():
            if isinstance(value, float):
                assert math.isfinite(value) and value > 0, (section, value)
    assert 0 <= cfg.agi.listen[1] < 65536 and 0 <= cfg.webpush.listen[1] < 65536


def check_phone(given):
    """parse/classify/match never raise; match is symmetric; a valid number is its own e164 match."""
    a, b, region, suffix_digits, internal = given
    phone.classify(a, internal)
    ka, kb = phone.parse(a, region), phone.parse(b, region)
    for key in (ka, kb):
        if key is not None:
            assert key.digits.isdigit()
            assert phone.suffix(key, suffix_digits) == (key.digits[-suffix_digits:] if suffix_digits > 0 else "")
            if key.e164 and len(key.digits) > internal:
                assert phone.match(key, key, suffix_digits, internal) == "e164"
    if ka is not None and kb is not None:
        assert phone.match(ka, kb, suffix_digits, internal) == phone.match(kb, ka, suffix_digits, internal)


def phone_inputs():
    return st.tuples(ts.phone_numbers(), ts.phone_numbers(), ts.regions(), st.integers(1, 12), st.integers(0, 8))


def check_crm_call(text):
    """unpack: a CallRecord or None; once packed (start time to the millisecond), a fixed point."""
    record = callstate.unpack(text)
    if record is not None:
        once = callstate.unpack(callstate.pack(record))
        assert once is not None and callstate.unpack(callstate.pack(once)) == once


def check_crm_call_round_trip(record):
    """pack -> unpack gives the record back, up to what CRM_CALL does not keep: '' and None are both
    empty, the name is cut at MAX_NAME; a record without call id or direction is not ours."""
    back = callstate.unpack(callstate.pack(record))
    if not record.call_id or record.direction not in ("Inbound", "Outbound"):
        assert back is None
        return
    fields = {k: (getattr(record, k) or ("" if k in ("link_table", "link_column", "lookup_status") else None))
              for k in callstate.FIELDS}      # the rest of a CallRecord (status, outcome...) is not carried
    fields["parent_name"] = (record.parent_name or "")[:callstate.MAX_NAME] or None
    assert back == record.__class__(**fields), back


class Target(NamedTuple):
    name: str
    strategy: Callable
    check: Callable


TARGETS = [
    Target("agi_env", fs.env_bytes, check_agi_env),
    Target("agi_replies", fs.reply_bytes, check_agi_replies),
    Target("agi_command", lambda: ts.TEXT | st.text(max_size=3000), check_agi_command),
    Target("ami_stream", fs.ami_bytes, check_ami_stream),
    Target("ami_action", ami_actions, check_ami_action),
    Target("ami_call_model", fs.event_script, check_call_model),
    Target("ws_message", ts.browser_messages, check_browser_message),
    Target("ws_token", ts.tokens, check_token),
    Target("ws_frames", ts.ws_frames, check_ws_frames),
    Target("config", lambda: st.tuples(ts.ini_files(), ts.environments()), check_config),
    Target("phone", phone_inputs, check_phone),
    Target("crm_call", ts.crm_call_texts, check_crm_call),
    Target("crm_call_round_trip", ts.call_records, check_crm_call_round_trip),
]
