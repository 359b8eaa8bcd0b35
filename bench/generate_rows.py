"""bench/generate.py's row builders: Generator makes the rows of users, accounts, contacts
(with their accounts_contacts links) and leads, chunk by chunk, as tuples of strings for the
loader, and remembers what the samples need: which phone slot holds its own number or another's
(``flags``, ``dups``) and which records are deleted.

One ``random.Random(seed)`` draws everything in a fixed order (users, accounts, contacts, leads,
each in primary-key order): the same seed and sizes give the same rows, whatever the chunk size."""
import random

from generate_phones import NumberSpace, stored_format
from generate_shapes import (ACCOUNT_FILL, COMPANY_WORDS, DELETED, DUPLICATE, EPOCH_2019, LEAD_FILL,
                             NAMES, NULL, ORIGINAL, PERSON_FILL, PHONES, SEVEN_YEARS, TAGS, record_id, stamp)


class Generator:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.region = args.region
        self.rng = random.Random(args.seed)
        self.space = NumberSpace(args.region)
        c, a, l = args.contacts, args.accounts, args.leads
        self.base = {"Accounts": 0, "Contacts": 3 * a, "Leads": 3 * a + 6 * c}
        self.total_slots = 3 * a + 6 * c + 6 * l
        self.flags = {"Accounts": bytearray(3 * a), "Contacts": bytearray(6 * c), "Leads": bytearray(6 * l)}
        self.deleted = {"Accounts": bytearray(a), "Contacts": bytearray(c), "Leads": bytearray(l)}
        self.rows = {"Accounts": a, "Contacts": c, "Leads": l}
        self.dups = {}           # slot -> [(module, row, column)] rows that carry that slot's number too
        self.users = []
        # Rows are generated (and loaded) in primary-key order: InnoDB appends to its clustered
        # index instead of splitting random pages, so the load does not depend on the buffer pool
        # holding the table.  Row r keeps its id; position p is the order of generation.
        self.ids, self.order = {}, {}
        for module, tag in TAGS.items():
            ids = [record_id(self.seed, tag, row) for row in range(self.rows[module])]
            self.ids[module] = ids
            self.order[module] = sorted(range(len(ids)), key=ids.__getitem__)
        self.first, self.last, self.forms, self.cities = NAMES[args.region]

    # -- numbers ---------------------------------------------------------------
    def slot(self, module, row, col):
        return self.base[module] + row * (3 if module == "Accounts" else 6) + col

    def _stored(self, slot):
        return stored_format(self.rng, self.region, self.space.number(slot))

    def _records(self, module, start, stop):
        """(position, row, id, entered, modified, deleted) of positions start..stop, in primary-key
        order; a record's dates and deleted flag are drawn when the caller asks for it."""
        ids, order = self.ids[module], self.order[module]
        for position in range(start, stop):
            row = order[position]
            yield (position, row, ids[row]) + self._begin(module, row)

    def _begin(self, module, row):
        """A record's dates and deleted flag (remembered for the samples)."""
        entered = EPOCH_2019 + int(self.rng.random() * SEVEN_YEARS)
        modified = entered + int(self.rng.random() * (EPOCH_2019 + SEVEN_YEARS + 86400 - entered))
        is_deleted = self.rng.random() < DELETED
        self.deleted[module][row] = is_deleted
        return stamp(entered), stamp(modified), "1" if is_deleted else "0"

    def _owner(self):
        return self.rng.choice(self.owner_ids) if self.rng.random() > 0.03 else NULL

    def _company(self):
        return "%s %s %s" % (self.rng.choice(COMPANY_WORDS), self.rng.choice(self.last), self.rng.choice(self.forms))

    def _phones(self, module, row, fills, shared):
        """The phone columns of a record: each filled with its probability, with its own number or,
        when ``shared(col)`` gives one, another slot's (slot, text), listed in ``dups``."""
        flags, width, phones = self.flags[module], len(fills), []
        for col, fill in enumerate(fills):
            if self.rng.random() >= fill:
                phones.append(NULL)
                continue
            found = shared(col)
            if found is None:
                flags[row * width + col] = ORIGINAL
                phones.append(self._stored(self.slot(module, row, col)))
                continue
            slot, text = found
            self.dups.setdefault(slot, []).append((module, row, PHONES[module][col]))
            flags[row * width + col] = DUPLICATE
            phones.append(text)
        return phones

    # -- tables ----------------------------------------------------------------
    def user_rows(self):
        rows, rng = [], self.rng
        when = stamp(EPOCH_2019)
        for i in range(self.args.users):
            uid = record_id(self.seed, b"u", i)
            ext = str(100 + i) if 100 + i < 1000 else str(1000 + i)
            status = "Inactive" if i % 50 == 49 else "Active"
            if i % 40 == 39:      # a full number in phone_work: not an extension, crmagi drops it
                ext = stored_format(rng, self.region, self.space.number(self.total_slots + 10_000_000 + i))
            first, last = rng.choice(self.first), rng.choice(self.last)
            rows.append((uid, "agent%04d" % i, first, last, status, "0", "0", "0", "0", "1", "Active",
                         ext, when, when, "1"))
            self.users.append({"id": uid, "user_name": "agent%04d" % i, "extension": ext, "status": status})
        self.owner_ids = [u["id"] for u in self.users if u["status"] == "Active"] or ["1"]
        return rows

    def account_rows(self, start, stop):
        rng, rows = self.rng, []
        for position, row, rid, entered, modified, deleted in self._records("Accounts", start, stop):
            phones = self._phones("Accounts", row, ACCOUNT_FILL, lambda col: self._branch(position, col))
            name, owner = self._company(), self._owner()      # in this order: the draws of the seed
            rows.append((rid, name, entered, modified, owner, owner, deleted, owner,
                         rng.choice(("Customer", "Prospect", "Partner")), rng.choice(self.cities), *phones))
        return rows

    def _branch(self, position, col):
        """Now and then phone_alternate is an earlier account's switchboard: a branch office."""
        rng, order = self.rng, self.order["Accounts"]
        if col == 1 and position > 10 and rng.random() < 0.05:
            other = order[rng.randrange(position)]
            if self.flags["Accounts"][other * 3] == ORIGINAL:
                slot = self.slot("Accounts", other, 0)
                return slot, self._stored(slot)
        return None

    def contact_rows(self, start, stop):
        rng, seed, accounts = self.rng, self.seed, self.rows["Accounts"]
        account_ids, rows, links = self.ids["Accounts"], [], []
        for position, row, rid, entered, modified, deleted in self._records("Contacts", start, stop):
            account = rng.randrange(accounts) if accounts and rng.random() < 0.8 else None
            if account is not None:
                links.append((record_id(seed, b"ac", row), rid, account_ids[account], modified, "0"))
            phones = self._phones("Contacts", row, PERSON_FILL,
                                  lambda col: self._contact_shared(position, account, col))
            owner = self._owner()
            rows.append((rid, entered, modified, owner, owner, deleted,
                         owner, rng.choice(self.first), rng.choice(self.last), rng.choice(self.cities),
                         rng.choice(("Cold Call", "Web Site", "Partner", "Email")), *phones))
        return rows, links

    def _contact_shared(self, position, account, col):
        """A contact's work phone is often its account's switchboard (with an extension); now and
        then two contacts share a home number."""
        rng = self.rng
        if col == 0 and account is not None and rng.random() < 0.25 and self.flags["Accounts"][account * 3] == ORIGINAL:
            slot = self.slot("Accounts", account, 0)
            text = self._stored(slot)
            if rng.random() < 0.5 and "x" not in text and "#" not in text and "доб" not in text:
                text += (" доб. %d" if self.region == "RU" else " x%d") % rng.randint(10, 999)
            return slot, text
        if col == 2 and position > 10 and rng.random() < 0.01:
            other = self.order["Contacts"][rng.randrange(position)]
            if self.flags["Contacts"][other * 6 + 2] == ORIGINAL:
                slot = self.slot("Contacts", other, 2)
                return slot, self._stored(slot)
        return None

    def lead_rows(self, start, stop):
        rng, rows = self.rng, []
        for _, row, rid, entered, modified, deleted in self._records("Leads", start, stop):
            phones = self._phones("Leads", row, LEAD_FILL, self._lead_shared)
            owner, company = self._owner(), self._company()   # in this order: the draws of the seed
            rows.append((rid, entered, modified, owner, owner, deleted,
                         owner, rng.choice(self.first), rng.choice(self.last), rng.choice(self.cities), company,
                         rng.choice(("New", "Assigned", "In Process")), rng.choice(("Cold Call", "Web Site")),
                         *phones))
        return rows

    def _lead_shared(self, col):
        """4 % of the leads' work and mobile numbers are a contact's: the same person twice."""
        rng, contacts = self.rng, self.rows["Contacts"]
        if col in (0, 1) and contacts and rng.random() < 0.04:
            other = rng.randrange(contacts)
            if self.flags["Contacts"][other * 6 + col] == ORIGINAL:
                slot = self.slot("Contacts", other, col)
                return slot, self._stored(slot)
        return None
