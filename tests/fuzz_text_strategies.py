"""Hypothesis strategies for the text inputs people and browsers type: websocket messages and
tokens, websocket frames, the INI config and its environment, phone numbers, the CRM_CALL
channel variable and what the SuiteCRM hook reads.  See tests/fuzz_strategies.py."""
import dataclasses
import json
import struct
import time
from datetime import datetime, timezone

from hypothesis import strategies as st

from agi.fastagi import callstate
from agi.config import SECTIONS
from crmsync.models import CallRecord
from fuzz_strategies import blown_up, env_blocks, mutated
from webpush import auth, messages

SECRET = "fuzz-secret-0123456789abcdef0123456789"
NOW = 1795699120
ODD = ["", " ", "0", "-1", "1e400", "-1e400", "nan", "inf", "NaN", "9" * 30, "\x00", "\u202e", "é", "💥",
       "yes", "no", "[::1]:80", "host:99999", ":", "a:b:c", "%", "\\", "'", '"', "\n", "\r", "${X}", "Local/;"]
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(ODD))


def _decoded(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# -- websocket messages ------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
CLAIM = st.one_of(JSON, st.integers(-2 ** 70, 2 ** 70), st.sampled_from([1e400, -1e400, 1e300, NOW, NOW + 600]))


@st.composite
def forged_claims(draw):
    """A token signed with the right secret around claims of any shape: what verify parses after the HMAC."""
    claims = {"v": draw(st.sampled_from([1, 1, 2, "1", None])), "uid": draw(st.one_of(TEXT, JSON)),
              "iat": draw(CLAIM), "exp": draw(CLAIM)}
    if draw(st.booleans()):
        claims["ses"] = draw(CLAIM)
    for key in draw(st.lists(st.sampled_from(sorted(claims)), max_size=2)):
        claims.pop(key, None)
    text = json.dumps(claims) if draw(st.booleans()) else json.dumps(draw(JSON))
    payload = auth._b64(text.encode("utf-8", "surrogatepass"))
    return payload + "." + auth._sign(SECRET, payload)


def tokens():
    minted = st.builds(lambda uid, ttl: auth.mint(SECRET, uid, NOW, ttl), TEXT, st.integers(-600, 600))
    return st.one_of(minted, forged_claims(), TEXT, st.builds(_decoded, mutated([auth.mint(SECRET, "u1", NOW, 600)
                                                                                  .encode()])))


def browser_messages():
    fields = st.fixed_dictionaries({"type": st.sampled_from(messages.CLIENT_TYPES + ("popup", "", "HELLO"))},
                                   optional={"token": st.one_of(tokens(), JSON), "tab": st.one_of(TEXT, JSON),
                                             "visible": JSON, "focused": JSON, "call": st.one_of(TEXT, JSON),
                                             "exten": st.one_of(TEXT, JSON), "user": st.one_of(TEXT, JSON)})
    valid = [json.dumps({"type": "hello", "token": auth.mint(SECRET, "u1", NOW, 600), "visible": True}).encode(),
             b'{"type":"transfer","call":"c1","exten":"104"}', b'{"type":"state","visible":false,"focused":true}']
    return st.one_of(fields.map(json.dumps), JSON.map(json.dumps), st.text(max_size=200),
                     st.builds(_decoded, mutated(valid)), st.builds(_decoded, blown_up(st.sampled_from(
                         [b"[", b"{", b'{"a":', b"[1,", b"\\u0000", b'"'])).map(lambda b: b[:messages.MAX_MESSAGE])))


def _frame(fin, rsv, opcode, masked, payload, length_form):
    length = len(payload)
    if length_form == 0 and length < 126:
        head = struct.pack("!B", length | (0x80 if masked else 0))
    elif length_form == 1 or (length_form == 0 and length < 65536):
        head = struct.pack("!BH", 126 | (0x80 if masked else 0), length)
    else:
        head = struct.pack("!BQ", 127 | (0x80 if masked else 0), length)
    mask = b"\x01\x02\x03\x04" if masked else b""
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if masked else payload
    return struct.pack("!B", (0x80 if fin else 0) | rsv << 4 | opcode) + head + mask + body


def ws_frames():
    """Client frames of every opcode, length form, fragmenting and masking, then mutated bytes."""
    frame = st.builds(_frame, st.booleans(), st.sampled_from([0, 0, 0, 1, 4]),
                      st.sampled_from([0, 1, 1, 1, 2, 8, 9, 10, 3, 15]), st.booleans(),
                      st.one_of(browser_messages().map(lambda t: t.encode("utf-8", "surrogatepass")),
                                st.binary(max_size=64), st.builds(lambda n: b"a" * n, st.integers(4000, 5000))),
                      st.sampled_from([0, 0, 1, 2]))
    stream = st.lists(frame, min_size=1, max_size=6).map(b"".join)
    return st.one_of(stream, stream.flatmap(lambda s: mutated([s])), st.binary(max_size=64),
                     st.builds(lambda n: b"\x81\xff" + struct.pack("!Q", n), st.integers(0, 2 ** 64 - 1)))


# -- the INI config and its environment ---------------------------------------------------
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
SECTION_NAMES = sorted(KEYS) + ["module:Contacts", "module:Cases", "did:+4930123400", "junk", "module:", "did:"]
VALUE = st.one_of(TEXT, st.sampled_from(["127.0.0.1:4573", "0.5", "3", "DE", "US", "Contacts, Leads",
                                         "phone_work", "calls_cases", "case_id", "mysql+pymysql://u:p@h/db"]))
KEY = st.one_of(st.sampled_from(sorted({k for keys in KEYS.values() for k in keys} | {"table", "link_table",
                                                                                        "campaign"})), TEXT)


@st.composite
def ini_files(draw):
    """INI bytes: sections and keys mostly real, values often odd; some mutated, some not UTF-8."""
    lines = []
    for section in draw(st.lists(st.one_of(st.sampled_from(SECTION_NAMES), TEXT), max_size=4)):
        lines.append("[%s]" % section)
        lines += ["%s = %s" % pair for pair in draw(st.lists(st.tuples(KEY, VALUE), max_size=5))]
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    return draw(st.one_of(st.just(data), mutated([data or b"[agi]\n"]), st.binary(max_size=100)))


def environments():
    """CRMAGI_<SECTION>_<KEY> variables (and some that only look like them)."""
    name = st.one_of(st.builds(lambda s, k: "CRMAGI_%s_%s" % (s.upper(), k.upper()), st.sampled_from(sorted(KEYS)),
                               KEY), st.text(max_size=20))
    return st.dictionaries(name.filter(lambda n: "\x00" not in n), VALUE.filter(lambda v: "\x00" not in v),
                           max_size=4)


# -- phone numbers ---------------------------------------------------------------------------
def _callerids():
    found = set()
    for block in env_blocks():
        for line in block.decode("utf-8", "replace").splitlines():
            if line.startswith(("agi_callerid:", "agi_extension:", "agi_dnid:")):
                found.add(line.split(":", 1)[1].strip())
    return sorted(found)


NUMBERS = ["+49 (30) 111-111", "030 222222", "0049 30 333333", "8 (499) 123-45-67", "123-45-67", "+1 650 253 0000",
           "(650) 253-0000 x12", "+44 20 7946 0000", "+7 499 123-45-67 доб. 12", "1234", "+", "00", "#12", ";ext=5"]


def phone_numbers():
    alphabet = st.text(alphabet="0123456789 +-().#x;ext=доб\t", max_size=40)
    return st.one_of(st.sampled_from(NUMBERS + _callerids()), alphabet, TEXT,
                     st.builds(lambda a, b: a + b, st.sampled_from(NUMBERS), alphabet),
                     st.builds(_decoded, blown_up(st.sampled_from([b" ", b"1", b"1 ", b"\t", b"(", b"x1"])))
                     .map(lambda text: text[:9000]))


def regions():
    import phonenumbers
    return st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS) + ["ZZ"])


# -- CRM_CALL ---------------------------------------------------------------------------------
def call_records():
    when = st.floats(0, 4e9).map(lambda t: datetime.fromtimestamp(round(t, 3), timezone.utc))
    opt = st.one_of(st.none(), st.text(min_size=1, max_size=30))
    return st.builds(CallRecord, call_id=st.text(min_size=1, max_size=40), linkedid=opt, uniqueid=opt,
                     direction=st.sampled_from(["Inbound", "Outbound"]), number=opt, did=opt, extension=opt,
                     parent_module=opt, parent_id=opt, parent_name=st.one_of(st.none(), st.text(min_size=1,
                                                                                                 max_size=150)),
                     link_table=st.text(max_size=20), link_column=st.text(max_size=20), assigned_user_id=opt,
                     lookup_status=st.text(max_size=20), started_at=when)


def crm_call_texts():
    packed = call_records().map(callstate.pack)
    fields = st.lists(st.one_of(TEXT, st.floats().map(str)), min_size=len(callstate.FIELDS),
                      max_size=len(callstate.FIELDS)).map(lambda parts: "|".join(["v1"] + parts))
    return st.one_of(packed, fields, TEXT, packed.flatmap(lambda text: mutated([text.encode()]).map(_decoded)))


# -- the SuiteCRM hook (php-cli) ------------------------------------------------------------
PHP_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | TEXT,
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                         max_leaves=6)


def hook_inputs():
    """What the hook reads: the request, the user, the clock and the installed config."""
    request = st.dictionaries(st.one_of(st.sampled_from(["action", "to_pdf", "sugar_body_only", "ajax_load",
                                                         "module"]), TEXT),
                              st.one_of(st.sampled_from(["Popup", "popup", "POPUP", "index", "0", "", "1"]),
                                        PHP_VALUE), max_size=4)
    config = st.fixed_dictionaries({"secret": st.text(min_size=1, max_size=60), "token_seconds":
                                    st.one_of(st.integers(1, 10 ** 6), st.sampled_from(["600", "abc", "1e3"])),
                                    "ws": st.text(max_size=60), "version": st.text(max_size=20)})
    return st.fixed_dictionaries({"request": request, "user_id": st.text(min_size=1, max_size=40),
                                  "user_name": TEXT, "now": st.integers(0, int(time.time()) + 10 ** 6),
                                  "config": config})
