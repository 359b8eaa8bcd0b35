"""bench/generate.py's phone numbers: the numbering plans of DE, RU, GB and FR, a space of
distinct numbers (slot -> number), and the ways a number is written: as a CRM user of a region
typed it (stored_format), and as a trunk of that region delivers it as caller ID (caller_format).

Every number is valid for ``phonenumbers``.  All randomness comes from the caller's ``rng``, in
a fixed order: the same seed gives the same text."""
import hashlib

# Numbering plans: (national prefix, subscriber digits, weight).  All checked valid with phonenumbers.
COUNTRIES = {
    "DE": dict(cc="49", trunk="0", idd="00", plans=[
        ("30", 7, 8), ("30", 8, 4), ("40", 7, 4), ("40", 8, 2), ("89", 7, 4), ("89", 8, 2), ("69", 7, 3),
        ("221", 7, 3), ("211", 7, 2), ("711", 7, 2), ("351", 7, 1), ("511", 7, 1),
        ("151", 8, 3), ("152", 8, 2), ("157", 8, 1), ("160", 7, 1), ("170", 7, 2), ("171", 7, 2),
        ("172", 7, 2), ("175", 7, 1), ("176", 8, 2), ("177", 7, 1), ("179", 7, 1)]),
    "RU": dict(cc="7", trunk="8", idd="810", plans=[
        ("495", 7, 6), ("499", 7, 5), ("812", 7, 4), ("343", 7, 2), ("383", 7, 1),
        ("916", 7, 4), ("903", 7, 3), ("925", 7, 3), ("926", 7, 3), ("985", 7, 2), ("905", 7, 2),
        ("910", 7, 1), ("968", 7, 1)]),
    "GB": dict(cc="44", trunk="0", idd="00", plans=[("161", 7, 1)]),
    "FR": dict(cc="33", trunk="0", idd="00", plans=[("1", 8, 1)]),
}
MIX = {"DE": (("DE", 88), ("RU", 8), ("GB", 2), ("FR", 2)),
       "RU": (("RU", 88), ("DE", 8), ("GB", 2), ("FR", 2))}
MULTIPLIER = 7_654_321          # coprime with 10: u -> (M*u + b) mod 10^n is a bijection


class NumberSpace:
    """Slot number -> a distinct phone number (country, national prefix, subscriber).

    Slot n uses plan table entry n % L; inside one numbering plan the subscribers come from a
    bijection of a per-plan counter, so two slots never get the same number.  Slots at or
    beyond the number of slots a generation used are numbers no record holds (``absent``)."""

    def __init__(self, region):
        table = _plan_table(region)
        seen, self.table = {}, []
        for country, prefix, digits in table:
            occurrence = seen.get((country, prefix, digits), 0)
            seen[(country, prefix, digits)] = occurrence + 1
            self.table.append([country, prefix, digits, occurrence])
        for entry in self.table:
            key = tuple(entry[:3])
            offset = int(hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest(), 16)
            entry += [seen[key], offset % 10 ** entry[2]]
        self.size = len(self.table)

    def number(self, slot):
        country, prefix, digits, occurrence, repeats, offset = self.table[slot % self.size]
        u = (slot // self.size) * repeats + occurrence
        if u >= 10 ** digits:
            raise ValueError("number space of %s %s exhausted" % (country, prefix))
        return country, prefix, str((MULTIPLIER * u + offset) % 10 ** digits).zfill(digits)


def _plan_table(region):
    """The plans of ``region``'s mix, each repeated by its share (so slot % len picks by weight)."""
    table = []
    for country, share in MIX[region]:
        plans = COUNTRIES[country]["plans"]
        total = sum(w for _, _, w in plans)
        for prefix, digits, weight in plans:
            table += [(country, prefix, digits)] * max(1, round(share * weight / total))
    return table


def e164(number):
    country, prefix, sub = number
    return "+%s%s%s" % (COUNTRIES[country]["cc"], prefix, sub)


def _groups(sub, sep="-"):
    """1234567 -> 123-45-67; 12345678 -> 1234-56-78."""
    return sub[:-4] + sep + sub[-4:-2] + sep + sub[-2:]


def stored_format(rng, region, number):
    """How a CRM user of ``region`` typed ``number``."""
    country, prefix, sub = number
    r = rng.random()
    if country != region:      # foreign numbers carry their country code
        text = _foreign(r, region, COUNTRIES[country]["cc"], prefix, sub)
    else:
        text = _pick(_GERMAN if region == "DE" else _RUSSIAN, r, prefix, sub)
    if rng.random() < 0.04:
        text += rng.choice((" доб. %d", " доб %d", " вн. %d") if region == "RU" else
                           (" x%d", " ext. %d", " #%d")) % rng.randint(1, 999)
    return text


def _foreign(r, region, cc, prefix, sub):
    if r < 0.55:
        return "+%s %s %s" % (cc, prefix, sub)
    if r < 0.75:
        return "+%s%s%s" % (cc, prefix, sub)
    if r < 0.9:
        return "%s %s %s %s" % (COUNTRIES[region]["idd"], cc, prefix, sub)
    return "+%s (%s) %s" % (cc, prefix, _groups(sub))


# How a region's own numbers are typed: (upper bound of r, format of (prefix, subscriber)), the
# first bound above r wins; the bounds are the cumulative shares of the formats.
_GERMAN = ((0.22, lambda p, s: "0%s %s" % (p, s)),
           (0.30, lambda p, s: "0%s/%s" % (p, s)),
           (0.38, lambda p, s: "0%s%s" % (p, s)),
           (0.46, lambda p, s: "(0%s) %s" % (p, _groups(s))),
           (0.66, lambda p, s: "+49 %s %s" % (p, s)),
           (0.74, lambda p, s: "+49%s%s" % (p, s)),
           (0.78, lambda p, s: "+49 (0)%s %s" % (p, s)),
           (0.84, lambda p, s: "0049 %s %s" % (p, s)),
           (0.87, lambda p, s: "0049%s%s" % (p, s)),
           (0.92, lambda p, s: "%s %s" % (p, s)),                   # trunk prefix left out
           (0.99, lambda p, s: "0%s-%s" % (p, s)),
           (1.00, lambda p, s: s))                                  # local number, no area code
_RUSSIAN = ((0.25, lambda p, s: "8 (%s) %s" % (p, _groups(s))),
            (0.40, lambda p, s: "+7 (%s) %s" % (p, _groups(s))),
            (0.50, lambda p, s: "+7 %s %s" % (p, _groups(s))),
            (0.58, lambda p, s: "8-%s-%s" % (p, _groups(s))),
            (0.66, lambda p, s: "8%s%s" % (p, s)),
            (0.71, lambda p, s: "7%s%s" % (p, s)),                  # country code without "+"
            (0.79, lambda p, s: "+7%s%s" % (p, s)),
            (0.86, lambda p, s: "%s %s %s %s" % (p, s[:3], s[3:5], s[5:])),
            (0.94, lambda p, s: "(%s) %s" % (p, _groups(s))),
            (0.99, lambda p, s: "8 %s %s" % (p, s)),
            (1.00, lambda p, s: _groups(s)))                        # local number, no area code


def _pick(table, r, prefix, sub):
    """The format of the first bound above ``r`` (random() < 1: the last always matches)."""
    for bound, fmt in table:
        if r < bound:
            return fmt(prefix, sub)


def caller_format(rng, region, number):
    """The caller ID a trunk in ``region`` delivers for ``number`` (agi_callerid)."""
    country, prefix, sub = number
    national = prefix + sub
    r = rng.random()
    if country != region:
        return ("+" if r < 0.6 else COUNTRIES[region]["idd"]) + COUNTRIES[country]["cc"] + national
    if region == "DE":
        return ("+49" if r < 0.40 else "0" if r < 0.65 else "0049" if r < 0.80 else "49") + national
    return ("+7" if r < 0.40 else "8" if r < 0.70 else "7" if r < 0.90 else "") + national
