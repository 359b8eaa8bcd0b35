"""Pure phone-number normalisation and matching (no I/O).

CRM users type numbers as they like (``8 (499) 123-45-67``, ``+49 30 1234``,
``123-45-67``), and trunks deliver callers as ``+7…``, ``7…``, ``8…`` or bare
national numbers.  ``parse`` turns both sides into a ``PhoneKey`` and ``match``
says by which rule, if any, two keys are the same number.  The rules, strongest
first:

``e164``
    Both numbers are valid and have the same E.164 form.
``national``
    Same national significant number, and the country codes agree, or only one
    side carried a country code and the other is not a valid number in the
    default region (a foreign number typed without its prefix).
``suffix``
    One side carried no country code and its digits (at least ``suffix_digits``
    of them) are the trailing digits of the other, as typed or in E.164:
    ``123-45-67`` matches ``+7 499 123-45-67``, a trunk's ``492113696525``
    matches ``+49 (0)211 3696525``.  Not when that side is a valid number of
    the default region and the other carries a different country code.

Numbers of ``internal_max_digits`` digits or fewer are extensions and never
match anything: an extension ``1234`` must not find the customer ``…1234``.
"""
import functools
import re
from dataclasses import dataclass
from typing import Optional

import phonenumbers
from phonenumbers import CountryCodeSource, NumberParseException, PhoneNumberFormat

RULES = ("e164", "national", "suffix")   # strongest first

# What callers show instead of a number when it is withheld.
_ANONYMOUS = frozenset(("", "anonymous", "unknown", "<unknown>", "private", "restricted", "unavailable"))

# An extension suffix typed after a number: "ext 12", "x12", "доб. 12", "#12", ";ext=12".
# It must follow a digit, space or bracket so that e.g. the "x" of "fax" is left alone.
_EXTENSION = re.compile(
    r"(?<=[\d\s)])\s*(?:;\s*ext\s*=|#|ext\.?|extn\.?|extension|x|доб\.?|вн\.?)\s*\d{1,7}\s*$",
    re.IGNORECASE)

_SPACES = re.compile(r"\s+")

# phonenumbers recorded a country code that the raw text itself carried.  A bare
# one ("7 499 …", "1 650 …") counts when it is the default region's code and what
# follows is a valid number (see _parse for the other case).
_FROM_NUMBER = (CountryCodeSource.FROM_NUMBER_WITH_PLUS_SIGN,
                CountryCodeSource.FROM_NUMBER_WITH_IDD,
                CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN)


@dataclass(frozen=True)
class PhoneKey:
    raw: str
    digits: str                  # every digit of raw, extension suffix removed
    e164: Optional[str]          # only for numbers phonenumbers finds valid
    national: Optional[str]      # national significant number, when parseable
    international: bool          # raw carried a country code (+, IDD such as 00/810/011, or bare cc)
    country_code: Optional[int] = None


CACHED_LENGTH = 64         # longer text (junk, a hostile caller ID) is parsed, not kept


def parse(raw, region) -> Optional[PhoneKey]:
    """A PhoneKey for raw as dialled or typed in ``region``; None when it has no digits.

    Cached (PhoneKey is immutable): a call's number is parsed by its lookup and again by its
    end (the missed-call list), and callers who call again are parsed once; a parse is
    ~50 us of phonenumbers, a cache hit well under 1 us.  At most 8,192 entries of at most
    64 characters: a flood of odd caller IDs cannot grow it."""
    if isinstance(raw, str) and len(raw) <= CACHED_LENGTH:
        return _cached(raw, region)
    return _parse(raw, region)


def _parse(raw, region):
    raw = raw or ""
    # One space per run: _EXTENSION may start anywhere in a run of spaces, so a long run
    # costs quadratic time (8,000 spaces in a caller ID held the event loop 2.7 s).
    text = _EXTENSION.sub("", _SPACES.sub(" ", raw)).strip()
    digits = phonenumbers.normalize_digits_only(text)
    if not digits:
        return None
    try:
        number = phonenumbers.parse(text, region, keep_raw_input=True)
    except NumberParseException:
        # Still comparable by its trailing digits.
        return PhoneKey(raw=raw, digits=digits, e164=None, national=None, international=text.startswith("+"))
    valid = phonenumbers.is_valid_number(number)
    if number.country_code_source == CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN and not valid:
        # phonenumbers also strips leading digits equal to the region's code when what is
        # left is merely of a possible length: a Munich subscriber stored without its 089,
        # "4983740", became +49 83740, an invalid number, and as "international" it could
        # not be the tail of a caller's +49 89 4983740.  Such digits are a local number.
        return PhoneKey(raw=raw, digits=digits, e164=None, national=digits, international=False,
                        country_code=number.country_code)
    return PhoneKey(
        raw=raw,
        digits=digits,
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164) if valid else None,
        national=phonenumbers.national_significant_number(number),
        international=number.country_code_source in _FROM_NUMBER,
        country_code=number.country_code,
    )


_cached = functools.lru_cache(maxsize=8192)(_parse)


def clear_cache():
    """Forget every cached parse (bench/lookup_compare.py: lookups as of a fresh process)."""
    _cached.cache_clear()


def classify(raw, internal_max_digits) -> str:
    """``anonymous``, ``internal`` (an extension) or ``number``.

    Anything with letters is anonymous rather than a number to search for: a SIP
    display name or ``Robert'); DROP TABLE`` says nothing about the caller.
    """
    text = (raw or "").strip()
    if text.lower() in _ANONYMOUS or any(ch.isalpha() for ch in text):
        return "anonymous"
    digits = phonenumbers.normalize_digits_only(text)
    if not digits:
        return "anonymous"
    if text.isdigit() and len(digits) <= internal_max_digits:
        return "internal"
    return "number"


def match(caller: PhoneKey, stored: PhoneKey, suffix_digits, internal_max_digits) -> Optional[str]:
    """The strongest rule by which caller and stored are the same number, else None."""
    if len(caller.digits) <= internal_max_digits or len(stored.digits) <= internal_max_digits:
        return None
    if caller.e164 and caller.e164 == stored.e164:
        return "e164"
    if _same_national(caller, stored):
        return "national"
    if _suffix_of(caller, stored, suffix_digits) or _suffix_of(stored, caller, suffix_digits):
        return "suffix"
    return None


def suffix(key: PhoneKey, n) -> str:
    """The last n digits of key (all of them when it is shorter): the SQL prefilter."""
    return key.digits[-n:] if n > 0 else ""


def strength(rule) -> int:
    """0 for the strongest rule; for sorting matches."""
    return RULES.index(rule)


def _same_national(a, b):
    if not a.national or a.national != b.national:
        return False
    if a.country_code == b.country_code:
        return True
    if a.international and b.international:
        return False        # two explicit, different country codes
    local = b if a.international else a
    # A number valid in the default region is taken to be local, not a foreign
    # number missing its prefix (+44 20 7946 0000 is not (207) 946-0000).
    return local.e164 is None


def _suffix_of(local, other, suffix_digits):
    """local carries no country code and is the tail of other's digits."""
    if local.international:
        return False
    if other.international and local.e164 and local.country_code != other.country_code:
        return False        # a valid local number is not the tail of a foreign one
    # The bare digits, or without a leading trunk/IDD zero ("030 1234567",
    # "0049…" typed in a CRM whose default region does not know that prefix),
    # or the national number (trunk prefix "8" of "8 (499)…" removed).
    # Of the other number its digits as typed, and as E.164: "+49 (0)211 3696525" types
    # a trunk zero that is no digit of the number, so a trunk's bare "492113696525"
    # is the tail of 492113696525, not of 4902113696525.
    ends = (other.digits, other.e164[1:]) if other.e164 else (other.digits,)
    for tail in {local.digits, local.digits.lstrip("0"), local.national or ""}:
        if len(tail) >= suffix_digits and any(end.endswith(tail) for end in ends):
            return True
    return False
