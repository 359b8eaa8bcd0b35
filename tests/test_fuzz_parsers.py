"""Tier a: a few seconds of fuzzing per parser that faces the network or a user, reproducible
(derandomized, no example database).  The same strategies and properties run for 100,000
inputs each in bench/fuzz.py; what they found is pinned by plain regression tests beside each
module's tests (test_webpush_inputs.py, test_config.py, test_callstate.py, test_ami_protocol.py,
test_phone.py)."""
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings

import fuzz_php
from fuzz_targets import TARGETS
from fuzz_text_strategies import hook_inputs

EXAMPLES = {"ami_stream": 60, "agi_command": 100, "config": 150}    # the slow ones; the others 300


def fuzz(strategy, check, examples):
    run = settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))(given(strategy)(check))
    run()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_survives_fuzzing(target):
    fuzz(target.strategy(), target.check, EXAMPLES.get(target.name, 300))


def test_suitecrm_hook_survives_fuzzing():
    try:
        fuzz(hook_inputs(), fuzz_php.check_hook, 300)
    finally:
        fuzz_php.hook().close()


MB = 1 << 20
BIG_INPUTS = [       # (parser, input): about 1 MB each, shaped to hit each parser's limit
    ("agi_env", b"agi_network_script: " + b"a" * MB),
    ("agi_env", b"agi_a: b\n" * (MB // 9)),
    ("agi_replies", (b"520-usage\n" * (MB // 10), [4096 * i for i in range(1, 200)])),
    ("ami_stream", (b"Event: X\r\nKey: " + b"v" * MB, [65536 * i for i in range(1, 17)])),
    ("ami_stream", (b"Event: X\r\n\r\n" * 20000, [])),
    ("ws_message", "[" * 4096),
    ("ws_frames", b"\x81\xfe\x0f\xff" + b"\x00" * MB),
    ("phone", ("1" + " " * MB + "#", "+4930111111", "DE", 7, 5)),
    ("crm_call", "v1" + "|%41" * (MB // 4)),
    ("config", (b"[agi]\n" + b"timeout = 1\n" * (MB // 12), {})),
]


@pytest.mark.parametrize("name, value", BIG_INPUTS, ids=[n for n, _ in BIG_INPUTS])
def test_a_big_input_needs_bounded_memory(name, value):
    """What one ~1 MB input costs at most while parsed: a few copies of it, not a blow-up."""
    check = {t.name: t.check for t in TARGETS}[name]
    tracemalloc.start()
    try:
        check(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * MB, "%s: %.1f MB" % (name, peak / MB)
