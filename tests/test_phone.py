"""crmsync.phone: pure parsing, classification and matching of phone numbers."""
import phonenumbers
import pytest
from hypothesis import assume, given, settings, strategies as st

from crmsync.phone import PhoneKey, classify, match, parse, suffix

SUFFIX, INTERNAL = 7, 5


def rule(a, b, region):
    return match(parse(a, region), parse(b, region), SUFFIX, INTERNAL)


# -- strategies: valid numbers of three regions, written the ways people write them --------

# region -> (country code, national formats' prefixes, area codes -> subscriber length)
REGIONS = {
    "RU": ("7", ("8", ""), {"495": 7, "499": 7, "812": 7, "903": 7, "916": 7, "343": 7}),
    "DE": ("49", ("0",), {"30": 8, "89": 8, "40": 8, "151": 8, "171": 8, "221": 7}),
    "US": ("1", ("1", ""), {"212": 7, "415": 7, "650": 7, "617": 7, "303": 7}),
}
INTERNATIONAL = {"RU": ("+7", "810 7"), "DE": ("+49", "0049"), "US": ("+1", "011 1")}
SEPARATORS = st.sampled_from([" ", "-", ".", "", "/"])
# These properties are about answers, not speed (test_a_long_run_of_spaces_is_parsed_in_linear_time
# is).  With Hypothesis' default deadline (200 ms per example) one stall of the process (a loaded
# box, a full garbage collection) during an example failed it as FlakyFailure: the rerun was quick.
PROPERTY = dict(deadline=None)


@st.composite
def numbers(draw, regions=tuple(REGIONS)):
    """(region, national significant number) of a valid number."""
    region = draw(st.sampled_from(regions))
    area = draw(st.sampled_from(sorted(REGIONS[region][2])))
    length = REGIONS[region][2][area]
    first = "23456789" if region == "US" else "123456789"
    subscriber = draw(st.text(first, min_size=1, max_size=1)) + draw(
        st.text("0123456789", min_size=length - 1, max_size=length - 1))
    nsn = area + subscriber
    assume(phonenumbers.is_valid_number(phonenumbers.parse("+" + REGIONS[region][0] + nsn)))
    return region, nsn


@st.composite
def written(draw, number, national_ok=True):
    """number as a person might type it: grouped, bracketed, with or without country code."""
    region, nsn = number
    prefixes = ["+" + REGIONS[region][0], INTERNATIONAL[region][1]]
    if national_ok:
        prefixes += list(REGIONS[region][1])
    prefix = draw(st.sampled_from(prefixes))
    cuts = sorted(draw(st.sets(st.integers(1, len(nsn) - 1), max_size=4)))
    groups = [nsn[i:j] for i, j in zip([0] + cuts, cuts + [len(nsn)])]
    if draw(st.booleans()):
        groups[0] = "(%s)" % groups[0]
    body = groups[0] + "".join(draw(SEPARATORS) + group for group in groups[1:])
    head = prefix + draw(st.sampled_from(["", " "])) if prefix else ""
    return head + body + draw(st.sampled_from(["", " ", "  "]))


@settings(max_examples=400, **PROPERTY)
@given(st.data())
def test_any_writing_of_a_number_matches_its_canonical_form(data):
    region, nsn = number = data.draw(numbers())
    text = data.draw(written(number))
    canonical = "+" + REGIONS[region][0] + nsn
    assert rule(text, canonical, region) == "e164", text
    assert parse(text, region).national == nsn


@settings(max_examples=300, **PROPERTY)
@given(st.data())
def test_an_international_writing_matches_in_every_region(data):
    region, nsn = number = data.draw(numbers())
    text = data.draw(written(number, national_ok=False))
    assume(text.lstrip().startswith("+"))       # IDD prefixes (00, 810, 011) differ by region
    canonical = "+" + REGIONS[region][0] + nsn
    for default in REGIONS:
        assert rule(text, canonical, default) == "e164", (text, default)


@settings(max_examples=400, **PROPERTY)
@given(st.data())
def test_two_different_valid_numbers_never_match_by_e164_or_national(data):
    default = data.draw(st.sampled_from(sorted(REGIONS)))
    first, second = data.draw(numbers()), data.draw(numbers())
    assume(first != second)
    # A national writing only means that number in its own region.
    a = data.draw(written(first, national_ok=first[0] == default))
    b = data.draw(written(second, national_ok=second[0] == default))
    assert rule(a, b, default) not in ("e164", "national"), (a, b, default)


@settings(max_examples=300, **PROPERTY)
@given(st.data())
def test_the_tail_of_a_number_typed_without_prefix_matches_it(data):
    region, nsn = number = data.draw(numbers())
    full = data.draw(written(number, national_ok=False))
    tail = nsn[-data.draw(st.integers(SUFFIX, len(nsn))):]
    # A tail such as "0010000" (DE) or "8101234" (RU) reads as an international
    # prefix: nobody types a local number like that.
    assume(not parse(tail, region).international)
    assert rule(tail, full, region) is not None, (tail, full)


@settings(**PROPERTY)
@given(st.text(alphabet="0123456789 +-()./#x", max_size=25), st.text(alphabet="0123456789 +-()", max_size=25),
       st.sampled_from(sorted(REGIONS)))
def test_match_is_symmetric_and_never_matches_extensions(a, b, region):
    ka, kb = parse(a, region), parse(b, region)
    assume(ka is not None and kb is not None)
    result = match(ka, kb, SUFFIX, INTERNAL)
    assert result == match(kb, ka, SUFFIX, INTERNAL)
    if len(ka.digits) <= INTERNAL or len(kb.digits) <= INTERNAL:
        assert result is None


@settings(**PROPERTY)
@given(st.text(max_size=40), st.sampled_from(sorted(REGIONS)))
def test_parse_and_classify_accept_any_text(text, region):
    key = parse(text, region)
    assert key is None or (key.digits.isdigit() and key.digits.isascii())
    assert classify(text, INTERNAL) in ("anonymous", "internal", "number")


# -- the formats from the issue trackers (docs/pitfalls.md, item 5) -----------------------

@pytest.mark.parametrize("caller, stored, region, expected", [
    ("+7 499 123 45 67", "8 (499) 123-45-67", "RU", "e164"),
    ("+74991234567", "499 123 45 67", "RU", "e164"),
    ("84991234567", "+7 (499) 123-45-67", "RU", "e164"),
    ("74991234567", "8-499-123-45-67", "RU", "e164"),
    ("+74991234567", "123-45-67", "RU", "suffix"),          # stored without city code
    ("1234567", "+7 499 123 45 67", "RU", "suffix"),        # caller without city code
    ("+74991234567", "+7 499 123 45 68", "RU", None),
    ("+74991234567", "+1 499 123 45 67", "RU", None),       # two explicit country codes
    ("+1 650 253 0000", "(650) 253-0000", "US", "e164"),
    ("16502530000", "650.253.0000", "US", "e164"),
    ("+1 650 253 0000", "1-650-253-0000", "US", "e164"),
    ("0330977089", "(033) 097-7089", "US", "national"),     # SuiteCRM demo: not a valid US number
    ("+1 033 097 7089", "(033) 097-7089", "US", "national"),
    ("+49 30 12345678", "493012345678", "DE", "e164"),      # FreePBX #587: +49… vs 49…
    ("493012345678", "+49 30 12345678", "US", "suffix"),    # ... in a CRM whose region is not DE
    ("+49 30 12345678", "0049 30 12345678", "US", "suffix"),
    ("+49 30 12345678", "030/1234 5678", "DE", "e164"),
    ("+49 30 12345678", "030 12345678", "US", "suffix"),
    # A trunk's bare 49… against the "+49 (0)…" Germans write: the "(0)" is in the typed digits
    # (49 0 211…), not in the number.  492113696525 is also valid as 04921 13696525 in DE.
    ("492113696525", "+49 (0)211 3696525", "DE", "suffix"),
    ("4915225414845", "+49 (0)152 25414845", "DE", "suffix"),
    ("495113034390", "+49 (0)511 3034390 x230", "DE", "suffix"),
    ("492113696525", "+49 (0)211 3696526", "DE", None),
    ("442079460000", "+44 (0)20 7946 0000", "US", "suffix"),
    # A local number whose first digits are the region's code: "4983740" (089 4983740 without
    # its area code) is no +49 83740, stored or calling.
    ("+49 89 4983740", "4983740", "DE", "suffix"),
    ("+49 89 4983740", "4983740 ext. 836", "DE", "suffix"),
    ("4983740", "089 4983740", "DE", "suffix"),
    ("4983740", "4983740", "DE", "national"),
    ("+49 89 4983740", "4983741", "DE", None),
    ("+7 499 123 45 67", "499 123 45 67", "US", "national"),  # a foreign number typed without prefix
    ("+44 20 7946 0000", "(207) 946-0000", "US", None),       # ... but not a valid local one
    ("+1 650 253 0000", "650 253 0000   ", "US", "e164"),    # asterlink #19: trailing spaces
    ("+1 650 253 0000 ", "650 253 0000", "US", "e164"),
    ("+1 650 253 0000", "+1 650 253 0000 x12", "US", "e164"),
    ("+1 650 253 0000", "+1 650 253 0000 ext 12", "US", "e164"),
    ("+1 650 253 0000", "+1 650 253 0000#12", "US", "e164"),
    ("+7 499 123 45 67", "+7 499 123-45-67 доб. 12", "RU", "e164"),
    ("1234", "+1 650 253 1234", "US", None),                  # yaai #224: extensions never match
    ("12345", "+1 650 251 2345", "US", None),
    ("+1 650 251 2345", "12345", "US", None),
    ("1234", "1234", "US", None),
    ("12345", "12345", "RU", None),
    ("123456", "7123456", "RU", None),                        # 6 digits: fewer than suffix_digits
])
def test_match_table(caller, stored, region, expected):
    assert rule(caller, stored, region) == expected
    assert rule(stored, caller, region) == expected


@pytest.mark.parametrize("raw, region, national, e164, international", [
    ("8 (499) 123-45-67", "RU", "4991234567", "+74991234567", False),
    ("+7 499 123 45 67", "RU", "4991234567", "+74991234567", True),
    ("499 123 45 67", "RU", "4991234567", "+74991234567", False),
    ("810 49 30 12345678", "RU", "3012345678", "+493012345678", True),
    ("0049 30 12345678", "DE", "3012345678", "+493012345678", True),
    ("030 12345678", "DE", "3012345678", "+493012345678", False),
    ("011 49 30 12345678", "US", "3012345678", "+493012345678", True),
    ("(033) 097-7089", "US", "0330977089", None, False),
    ("+1 650 253 0000 x12", "US", "6502530000", "+16502530000", True),
    ("4983740", "DE", "4983740", None, False),                # not +49 83740
    ("4930123456", "DE", "30123456", "+4930123456", True),    # valid without its bare 49: +49 30 123456
])
def test_parse(raw, region, national, e164, international):
    key = parse(raw, region)
    assert (key.national, key.e164, key.international) == (national, e164, international)
    assert key.raw == raw


def test_parse_keeps_digits_of_what_phonenumbers_rejects():
    assert parse("", "US") is None
    assert parse("n/a", "US") is None
    assert parse("+7 499 123-45-67 доб. 12", "RU").digits == "74991234567"
    assert parse("fax 1234567", "US").digits == "1234567"
    key = parse("1", "US")
    assert key == PhoneKey(raw="1", digits="1", e164=None, national=None, international=False)


def test_suffix():
    assert suffix(parse("+7 (499) 123-45-67", "RU"), 7) == "1234567"
    assert suffix(parse("12-34", "RU"), 7) == "1234"


@pytest.mark.parametrize("raw, expected", [
    ("", "anonymous"), ("   ", "anonymous"), ("anonymous", "anonymous"), ("Anonymous", "anonymous"),
    ("unknown", "anonymous"), ("Unknown", "anonymous"), ("<unknown>", "anonymous"),
    ("private", "anonymous"), ("PRIVATE", "anonymous"), ("restricted", "anonymous"),
    ("unavailable", "anonymous"), ("Robert'); DROP TABLE contacts;--", "anonymous"),
    ("'; DROP TABLE contacts;--", "anonymous"), ("0330977089 OR 1=1", "anonymous"), ("---", "anonymous"),
    ("201", "internal"), ("1234", "internal"), ("12345", "internal"), (" 201 ", "internal"),
    ("123456", "number"), ("+74991234567", "number"), ("8 (499) 123-45-67", "number"),
    ("1234567'--", "number"),
])
def test_classify(raw, expected):
    assert classify(raw, INTERNAL) == expected


def test_classify_respects_internal_max_digits():
    assert classify("1234", 3) == "number"
    assert classify("123456", 6) == "internal"


def test_a_long_run_of_spaces_is_parsed_in_linear_time():
    """Found by bench/fuzz.py: the extension pattern tried every start in a run of spaces
    (8,000 spaces took 2.7 s of the event loop; this input would take minutes)."""
    import signal

    def hang(*_):
        raise TimeoutError("phone.parse hung")

    signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)        # linear: milliseconds; quadratic: minutes
    try:
        key = parse("1" + " " * 50000 + "#", "DE")
    finally:
        signal.alarm(0)
    assert key.digits == "1"


def test_parse_is_cached_for_short_text_only():
    from crmsync import phone

    first = parse("+49 30 1234567", "DE")
    assert parse("+49 30 1234567", "DE") is first
    assert parse("+49 30 1234567", "AT") is not first and parse("+49 30 1234567", "AT") == phone._parse(
        "+49 30 1234567", "AT")
    long = "1" * 10 + " " * phone.CACHED_LENGTH
    assert parse(long, "DE") == parse(long, "DE") and parse(long, "DE") is not parse(long, "DE")
    assert parse(None, "DE") is None and parse("", "DE") is None
