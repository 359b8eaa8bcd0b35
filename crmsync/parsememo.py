"""A phone value's parse, kept in its phone index row (``parse_memo``) so that a lookup does
not parse its candidates again.  On 1M contacts those parses (about 35 us of phonenumbers
each) were 0.08 ms of a lookup's p50 and 0.15-0.25 ms of its p99 (README, "Where the rest of
the tail goes").

A memo starts with a digest of everything the parse depends on: the value's exact text,
``[lookup] default_region`` and the parser (crmsync/phone.py's source and phonenumbers'
version).  A lookup takes it only when the digest of the record's *current* value, the
current region and this parser is the same; so a memo written for another value (changed
without a trigger, or while a rebuild raced an edit), another region (two boxes, a switch
during a rebuild) or another parser (an upgrade) costs a parse, never a wrong match.
``crmagi index rebuild`` writes the memos; the triggers leave them as they are (stale, and
then not believed).

Pure: no I/O beyond reading phone.py's source once at import.
"""
import hashlib
from pathlib import Path
from typing import Optional

import phonenumbers

from . import phone

DIGEST_CHARS = 24           # 96 bits of blake2b, hex
MAX_LENGTH = 160            # the column's width (crmsync/dialect/mysql_index.py)
_NONE = "~"                 # a field that is None (digits and E.164 never hold "~" or "|")


def _parser_id() -> Optional[str]:
    try:
        source = Path(phone.__file__).read_bytes()
    except OSError:         # no source beside the bytecode: no way to tell a parser change, no memo
        return None
    return "%s/%s" % (hashlib.sha256(source).hexdigest()[:16], phonenumbers.__version__)


PARSER = _parser_id()


def digest(raw: str, region: str, parser: Optional[str] = PARSER) -> Optional[str]:
    """What the memo of ``raw`` in ``region`` by ``parser`` starts with (None: no memo possible)."""
    if parser is None or not isinstance(raw, str):
        return None
    text = "%s\0%s\0%s" % (parser, region, raw)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_CHARS // 2).hexdigest()


def make(raw: str, region: str) -> Optional[str]:
    """The memo of ``raw``'s parse in ``region``, or None when there is nothing to keep."""
    head = digest(raw, region)
    key = phone.parse(raw, region)
    if head is None or key is None:
        return None
    fields = (key.digits, key.e164, key.national,
              None if key.country_code is None else str(key.country_code), "1" if key.international else "0")
    text = "|".join([head] + [_NONE if f is None else f for f in fields])
    return text if len(text) <= MAX_LENGTH and text.isascii() else None


def read(raw: str, region: str, memo: Optional[str]) -> Optional[phone.PhoneKey]:
    """``phone.parse(raw, region)``, from ``memo`` when it was made from this very ``raw``,
    ``region`` and parser; None otherwise (then parse)."""
    if not memo or memo[:DIGEST_CHARS] != digest(raw, region):
        return None
    parts = memo.split("|")
    if len(parts) != 6:
        return None
    digits, e164, national, country, international = (None if p == _NONE else p for p in parts[1:])
    return phone.PhoneKey(raw=raw, digits=digits, e164=e164, national=national, international=international == "1",
                          country_code=int(country) if country is not None else None)
