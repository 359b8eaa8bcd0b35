"""Hypothesis strategies for fuzzing every parser that faces the network or a user.

Shared by the CI tests (tests/test_fuzz_*.py, a few hundred inputs each) and the long run
(bench/fuzz.py, 100,000 and more).  Inputs start from what real peers sent (the recorded
Asterisk sessions and AMI streams in shared/fixtures/asterisk), then get mutated: bytes
cut, repeated, spliced from another recording, or replaced by the characters parsers
split on.  A "blow-up" repeats a chunk thousands of times, for the size limits.
"""
from functools import lru_cache

from hypothesis import strategies as st

from agi.ami import amiproto
from asterisk_replay import load_agi_transcript
from conftest import ASTERISK

# Bytes the parsers split on or choke on, inserted more often than chance would.
TOKENS = [b"\n", b"\r\n", b"\r\n\r\n", b"\n\n", b": ", b":", b"agi_", b"200 result=", b"520-", b"520 ",
          b"HANGUP\n", b"(", b")", b"\\", b'"', b"\x00", b"\xff", b"\xc3", b"|", b"%", b"Event: ",
          b"Response: ", b"ActionID: ", b"Linkedid: ", b"Uniqueid: ", b" ", b"\t", b"+", b"#", b"x"]
MAX_BLOWUP = 1 << 20      # bytes: the largest input a blow-up makes


@lru_cache(maxsize=None)
def agi_sessions():
    return [session for path in sorted(ASTERISK.glob("*.agi.txt")) for session in load_agi_transcript(path)]


@lru_cache(maxsize=None)
def env_blocks():
    return sorted({session.env for session in agi_sessions() if session.env})


@lru_cache(maxsize=None)
def reply_streams():
    """What Asterisk answered to each command, HANGUP lines included, as one byte stream per session."""
    streams = set()
    for session in agi_sessions():
        data = b"".join(line for kind, line in session.lines if kind == "A>")[len(session.env):]
        if data:
            streams.add(data)
    return sorted(streams)


@lru_cache(maxsize=None)
def ami_streams():
    """The recorded AMI streams without their banner, as Asterisk sent them."""
    return [amiproto.split_banner(path.read_bytes())[1] for path in sorted(ASTERISK.glob("*.ami.txt"))]


@lru_cache(maxsize=None)
def ami_event_lists():
    """Per recording, its events as (key, value) header lists, unescaped as the client hands them on."""
    lists = []
    for stream in ami_streams():
        frames, _ = amiproto.split_frames(stream)
        messages = [amiproto.unescape(amiproto.parse_frame(frame)) for frame in frames]
        lists.append([m.headers for m in messages if m.event])
    return lists


@lru_cache(maxsize=None)
def header_values():
    """Every value a key had in the recordings: mutations swap in a real value of another call."""
    values = {}
    for events in ami_event_lists():
        for headers in events:
            for key, value in headers:
                values.setdefault(key, set()).add(value)
    return {key: sorted(found) for key, found in values.items()}


def _mutate(data: bytes, edits) -> bytes:
    for kind, where, size, token in edits:
        at = where % (len(data) + 1)
        if kind == "cut":
            data = data[:at] + data[at + size:]
        elif kind == "insert":
            data = data[:at] + token + data[at:]
        elif kind == "replace":
            data = data[:at] + token + data[at + len(token):]
        elif kind == "repeat":
            data = data[:at] + data[at:at + size] * 3 + data[at:]
        elif kind == "truncate":
            data = data[:at]
    return data


_EDIT = st.tuples(st.sampled_from(["cut", "insert", "replace", "repeat", "truncate"]),
                  st.integers(0, 1 << 20), st.integers(1, 64),
                  st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=8)))


def mutated(seeds):
    """A seed (a list of bytes) with a few edits applied."""
    return st.builds(_mutate, st.sampled_from(seeds), st.lists(_EDIT, max_size=6))


def blown_up(chunks=st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=16))):
    """A chunk repeated until the input is large (up to MAX_BLOWUP bytes): the size limits."""
    return st.builds(lambda chunk, n, tail: (chunk * min(n, MAX_BLOWUP // len(chunk)) + tail),
                     chunks, st.integers(1000, 1 << 17), st.sampled_from([b"", b"\n", b"\r\n\r\n", b"a", b"#"]))


def fuzz_bytes(seeds):
    """Mostly mutated recordings, some random bytes, some blown-up ones."""
    return st.one_of(mutated(seeds), mutated(seeds), st.binary(max_size=512), blown_up(),
                     st.builds(lambda a, b: a + b, st.sampled_from(seeds), blown_up()))


def chunked(data_strategy):
    """(data, cut points): the same bytes arriving in pieces at any boundary."""
    return data_strategy.flatmap(lambda data: st.tuples(
        st.just(data), st.lists(st.integers(0, max(len(data), 1)), max_size=8).map(sorted)))


def pieces(data, cuts):
    bounds = [0] + sorted(c for c in cuts if 0 < c < len(data)) + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def env_bytes():
    return fuzz_bytes(env_blocks())


def reply_bytes():
    return chunked(fuzz_bytes(reply_streams()))


def ami_windows():
    """Pieces of the recorded streams (a few KB, cut anywhere): whole streams are 100-200 KB."""
    return st.builds(lambda stream, start, size: stream[start % len(stream):start % len(stream) + size],
                     st.sampled_from(ami_streams()), st.integers(0, 1 << 18), st.integers(1, 8192))


def ami_bytes():
    seeds = [stream[:8192] for stream in ami_streams()]
    return chunked(st.one_of(fuzz_bytes(seeds), ami_windows(), ami_windows().flatmap(lambda w: mutated([w]))))


# -- AMI event sequences through the call model ---------------------------------------------
EVENT_NAMES = ("Newchannel", "Newstate", "NewConnectedLine", "DialBegin", "DialEnd", "BridgeEnter", "BridgeLeave",
               "Hangup", "LocalBridge", "Rename", "VarSet", "BlindTransfer", "AttendedTransfer", "AgentCalled",
               "AgentConnect", "AgentComplete", "QueueCallerJoin", "QueueCallerLeave", "OriginateResponse",
               "AgentLogin", "AgentLogoff", "MixMonitorStart", "BridgeMerge", "Shutdown", "CoreShowChannel")


@st.composite
def event_script(draw):
    """(steps): ("event", headers) | ("resync", headers list) | ("expire", seconds), from a recording
    (sometimes two spliced: their ids may collide) with events dropped, repeated, swapped and edited."""
    recordings = ami_event_lists()
    events = list(draw(st.sampled_from(recordings)))
    if draw(st.booleans()):
        other = draw(st.sampled_from(recordings))
        at, start = draw(st.integers(0, len(events))), draw(st.integers(0, len(other)))
        events[at:at] = other[start:start + draw(st.integers(1, 80))]
    values = header_values()
    for _ in range(draw(st.integers(0, 12))):
        if not events:
            break
        i = draw(st.integers(0, len(events) - 1))
        kind = draw(st.sampled_from(["drop", "repeat", "swap", "value", "unset", "rename", "noise"]))
        headers = list(events[i])
        if kind == "drop":
            del events[i]
        elif kind == "repeat":
            events.insert(i, headers)
        elif kind == "swap" and i + 1 < len(events):
            events[i], events[i + 1] = events[i + 1], events[i]
        elif kind == "noise":
            events[i] = headers + [(draw(st.text(max_size=8)), draw(st.text(max_size=20)))]
        elif headers:
            j = draw(st.integers(0, len(headers) - 1))
            key = headers[j][0]
            if kind == "value":
                value = draw(st.one_of(st.sampled_from(values.get(key) or [""]), st.text(max_size=30),
                                       st.sampled_from(["", "-1", "0", "1e400", "nan", "<unknown>", "Local/;",
                                                        "@", "/", "&", "PJSIP/", "Agent/"])))
                headers[j] = (key, value)
            elif kind == "unset":
                del headers[j]
            else:
                headers[j] = ("Event", draw(st.sampled_from(EVENT_NAMES)))
            events[i] = headers
    steps = [("event", headers) for headers in events]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(steps)))
        if draw(st.booleans()):
            steps.insert(at, ("expire", draw(st.floats(0, 600))))
        else:   # an AMI reconnect: the channels up at that point, listed (some forgotten)
            listed = [[("Event", "CoreShowChannel")] + [h for h in headers if h[0] != "Event"]
                      for step, headers in steps[:at] if step == "event" and dict(headers).get("Event") == "Newchannel"]
            keep = draw(st.lists(st.booleans(), min_size=len(listed), max_size=len(listed)))
            steps.insert(at, ("resync", [h for h, k in zip(listed, keep) if k]))
    return steps


# -- fast mutation of generated inputs (bench/fuzz.py: hypothesis draws the seeds, this the rest) --
_NUMBERS = [0, -1, 1, 2, 7, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 30]


def mutate_value(value, rng):
    """The value with one random edit, keeping its shape: bytes and str get the byte edits of
    ``mutated``; tuples, lists and dicts get an element edited, dropped, repeated or swapped."""
    if isinstance(value, bytes):
        return _mutate(value, [(rng.choice(["cut", "insert", "replace", "repeat", "truncate", "insert"]),
                                rng.randrange(1 << 20), rng.randint(1, 64), rng.choice(TOKENS))
                               for _ in range(rng.randint(1, 3))])
    if isinstance(value, str):
        return mutate_value(value.encode("utf-8", "surrogatepass"), rng).decode("utf-8", "replace")
    if isinstance(value, bool) or value is None:
        return rng.choice([True, False, None, value])
    if isinstance(value, (int, float)):     # numbers keep their type: some are the harness's (cuts, delays)
        return type(value)(abs(rng.choice(_NUMBERS + [value + 1, value * 2])) % (1 << 20))
    if isinstance(value, tuple) and value:
        i = rng.randrange(len(value))
        return value[:i] + (mutate_value(value[i], rng),) + value[i + 1:]
    if isinstance(value, list) and value:
        items, i = list(value), rng.randrange(len(value))
        edit = rng.choice(["edit", "edit", "drop", "repeat", "swap"])
        if edit == "edit":
            items[i] = mutate_value(items[i], rng)
        elif edit == "drop":
            del items[i]
        elif edit == "repeat":
            items.insert(i, items[i])
        else:
            j = rng.randrange(len(items))
            items[i], items[j] = items[j], items[i]
        return items
    if isinstance(value, dict) and value:      # keys stay: some dicts are the harness's (the hook's input)
        items, key = dict(value), rng.choice(sorted(value, key=repr))
        items[key] = mutate_value(items[key], rng)
        return items
    if hasattr(value, "__dataclass_fields__"):
        name = rng.choice(sorted(vars(value)))
        if isinstance(getattr(value, name), str):
            return value.__class__(**dict(vars(value), **{name: mutate_value(getattr(value, name), rng)}))
    return value
