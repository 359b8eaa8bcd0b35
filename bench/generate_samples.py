"""bench/generate.py's sample callers: numbers that are in the generated CRM (``present``: the
caller ID as a trunk delivers it, its E.164 form, the record it was drawn from, the module crmagi
should answer with and every searched record that holds the number) and numbers that are in no
record (``absent``).  lookup_compare.py and load.py call with them.

Drawn with their own ``random.Random`` (from the seed), after the rows: the rows do not depend on
how many samples are asked for."""
import random

from generate_phones import caller_format, e164
from generate_shapes import MODULE_ORDER, ORIGINAL, PHONES, SEARCHED, TAGS, record_id


def samples(gen, present_count, absent_count):
    """(present, absent) for the Generator ``gen`` once all its rows are made."""
    rng = random.Random(gen.seed * 7919 + 1)
    return _present(gen, rng, present_count), _absent(gen, rng, absent_count)


def _present(gen, rng, count):
    weights = [(m, gen.rows[m]) for m in MODULE_ORDER if gen.rows[m]]
    total = sum(w for _, w in weights)
    present, tries = [], 0
    while len(present) < count and total and tries < count * 50:    # bounded: few live numbers
        tries += 1
        module, row = _record(weights, rng.randrange(total))
        if gen.deleted[module][row]:
            continue
        width = len(PHONES[module])
        cols = [c for c in range(width) if gen.flags[module][row * width + c] == ORIGINAL
                and PHONES[module][c] in SEARCHED[module]]
        if cols:
            present.append(_sample(gen, rng, module, row, rng.choice(cols)))
    return present


def _record(weights, pick):
    """The (module, row) of the ``pick``-th record over the modules in ``weights``."""
    for module, count in weights:
        if pick < count:
            return module, pick
        pick -= count
    raise ValueError(pick)


def _sample(gen, rng, module, row, col):
    slot = gen.slot(module, row, col)
    number = gen.space.number(slot)
    column = PHONES[module][col]
    holders = [(module, row, column)] + gen.dups.get(slot, [])
    group = [[m, record_id(gen.seed, TAGS[m], r), c] for m, r, c in holders
             if not gen.deleted[m][r] and c in SEARCHED[m]]
    expect_module = next(m for m in MODULE_ORDER if any(g[0] == m for g in group))
    return {"caller": caller_format(rng, gen.region, number), "e164": e164(number),
            "module": module, "id": record_id(gen.seed, TAGS[module], row),
            "column": column, "expect_module": expect_module, "group": group}


def _absent(gen, rng, count):
    """Numbers of slots beyond the generation's: no record holds them."""
    absent = []
    for _ in range(count):
        number = gen.space.number(gen.total_slots + rng.randrange(max(1, gen.total_slots)))
        absent.append({"caller": caller_format(rng, gen.region, number), "e164": e164(number)})
    return absent
