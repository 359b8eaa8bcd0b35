"""Fill a SuiteCRM 7 database with N contacts / accounts / leads for the benchmarks (issue #3).

What it makes (reproducible: the same --seed gives the same rows, ids and sample file):

* ``users``: --users agents with an extension in ``phone_work`` (3-4 digits), a few inactive
  ones and a few whose phone_work is a full number (not an extension); they own the records.
* ``accounts`` (phone_office, phone_alternate, phone_fax), ``contacts`` and ``leads``
  (phone_work, phone_mobile, phone_home, phone_other, phone_fax, assistant_phone), 2 % of
  them soft-deleted, and ``accounts_contacts`` links for 80 % of the contacts.
* Numbers as people type them. ``--region DE``: ``030 1234567``, ``030/1234567``,
  ``(030) 123-45-67``, ``+49 30 1234567``, ``+49 (0)30 1234567``, ``0049 30 1234567``, without
  trunk prefix ``30 1234567``, local-only ``1234567``, mobiles ``0151 23456789``, extension
  suffixes `` x12`` / `` ext. 123``.  ``--region RU``: ``8 (499) 123-45-67``, ``+7 (916) 123-45-67``,
  ``8-499-123-45-67``, ``84991234567``, ``74991234567``, ``499 123 45 67``, local ``123-45-67``,
  `` доб. 12``.  Each region's CRM also holds numbers of the other country, of GB and FR,
  typed internationally.  Every number is valid for ``phonenumbers``.
* Duplicates across modules: a quarter of the linked contacts carry their account's switchboard
  number as phone_work (often with an extension suffix), 4 % of the leads carry a contact's
  number, a few accounts share a number, a few contacts share a home number.
* A sample file (JSON) of caller numbers as a trunk delivers them (``+4930…``, ``030…``,
  ``0049…``, ``4930…``; ``+7…``, ``8…``, ``7…``), each with the records that hold the number
  (``present``), and numbers that are in no record (``absent``).  lookup_compare.py and
  load.py call with these numbers.

Fast: rows are generated in this process while the previous chunk is loaded with
``LOAD DATA LOCAL INFILE`` (multi-row INSERTs of --chunk rows when the server refuses
local infile); the tables' secondary indexes are dropped for the load and rebuilt once at
the end (their exact SuiteCRM definitions).  Reports rows/s.

    python bench/generate.py                                  # new crmagi_bench_* database, 1M/300k/1M
    python bench/generate.py --database crm --contacts 20000 --accounts 6000 --leads 20000 --seed 7
    python bench/generate.py --region RU --samples /tmp/ru-samples.json
"""
import argparse
import hashlib
import json
import os
import queue
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Progress, create_database  # noqa: E402

MODULE_ORDER = ("Contacts", "Accounts", "Leads")   # crmagi's default [lookup] modules
PERSON_PHONES = ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax", "assistant_phone")
ACCOUNT_PHONES = ("phone_office", "phone_alternate", "phone_fax")
SEARCHED = {"Contacts": ("phone_work", "phone_mobile", "phone_home", "phone_other", "assistant_phone"),
            "Accounts": ("phone_office", "phone_alternate"),
            "Leads": ("phone_work", "phone_mobile", "phone_home", "phone_other", "assistant_phone")}
PERSON_FILL = (0.85, 0.60, 0.25, 0.05, 0.10, 0.03)
LEAD_FILL = (0.80, 0.55, 0.20, 0.04, 0.06, 0.02)
ACCOUNT_FILL = (0.95, 0.20, 0.35)
DELETED = 0.02
EMPTY, ORIGINAL, DUPLICATE = 0, 1, 2

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

NAMES = {
    "DE": (("Anna", "Lukas", "Mia", "Leon", "Emma", "Paul", "Hannah", "Jonas", "Sophie", "Felix", "Lena",
            "Maximilian", "Marie", "Elias", "Laura", "Noah", "Julia", "Ben", "Lea", "Finn", "Katrin",
            "Jürgen", "Sabine", "Uwe", "Birgit", "Dieter", "Monika", "Klaus", "Petra", "Stefan"),
           ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
            "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann",
            "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt",
            "Werner", "Schmitz", "Krause", "Meier", "Lehmann", "Schmid", "Schulze", "Maier", "Köhler",
            "Herrmann", "König", "Walter", "Mayer", "Huber", "O'Neil"),
           ("GmbH", "AG", "KG", "GmbH & Co. KG", "e.K.", "OHG"),
           ("Berlin", "Hamburg", "München", "Köln", "Frankfurt", "Stuttgart", "Düsseldorf", "Dresden")),
    "RU": (("Анна", "Иван", "Мария", "Алексей", "Елена", "Дмитрий", "Ольга", "Сергей", "Наталья", "Андрей",
            "Татьяна", "Михаил", "Ирина", "Николай", "Светлана", "Владимир", "Екатерина", "Павел"),
           ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
            "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
            "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин"),
           ("ООО", "АО", "ПАО", "ИП"),
           ("Москва", "Санкт-Петербург", "Екатеринбург", "Новосибирск", "Казань")),
}
COMPANY_WORDS = ("Nord", "Süd", "Alpha", "Spreewald", "Rhein", "Elbe", "Techno", "Contor", "Vektor",
                 "Polar", "Ural", "Baltic", "Delta", "Orion", "Atlas", "Neva", "Isar", "Main", "Linden")

ACCOUNT_COLS = ("id", "name", "date_entered", "date_modified", "modified_user_id", "created_by", "deleted",
                "assigned_user_id", "account_type", "billing_address_city") + ACCOUNT_PHONES
CONTACT_COLS = ("id", "date_entered", "date_modified", "modified_user_id", "created_by", "deleted",
                "assigned_user_id", "first_name", "last_name", "primary_address_city", "lead_source") + PERSON_PHONES
LEAD_COLS = ("id", "date_entered", "date_modified", "modified_user_id", "created_by", "deleted",
             "assigned_user_id", "first_name", "last_name", "primary_address_city", "account_name",
             "status", "lead_source") + PERSON_PHONES
LINK_COLS = ("id", "contact_id", "account_id", "date_modified", "deleted")
USER_COLS = ("id", "user_name", "first_name", "last_name", "status", "deleted", "is_admin", "is_group",
             "portal_only", "show_on_employees", "employee_status", "phone_work", "date_entered",
             "date_modified", "sugar_login")
INDEXED_TABLES = ("accounts", "contacts", "leads", "accounts_contacts")
NULL = "\\N"
EPOCH_2019 = 1546300800
SEVEN_YEARS = 7 * 365 * 86400


def record_id(seed, tag, row):
    """A deterministic SuiteCRM-shaped id (8-4-4-4-12 hex) for row ``row`` of module ``tag``."""
    h = hashlib.blake2b(b"%d:%s:%d" % (seed, tag, row), digest_size=16).hexdigest()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _stamp(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


class NumberSpace:
    """Slot number -> a distinct phone number (country, national prefix, subscriber).

    Slot n uses plan table entry n % L; inside one numbering plan the subscribers come from a
    bijection of a per-plan counter, so two slots never get the same number.  Slots at or
    beyond the number of slots a generation used are numbers no record holds (``absent``)."""

    def __init__(self, region):
        mix = MIX[region]
        table = []
        for country, share in mix:
            plans = COUNTRIES[country]["plans"]
            total = sum(w for _, _, w in plans)
            for prefix, digits, weight in plans:
                table += [(country, prefix, digits)] * max(1, round(share * weight / total))
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


def _groups(sub, sep="-"):
    """1234567 -> 123-45-67; 12345678 -> 1234-56-78."""
    return sub[:-4] + sep + sub[-4:-2] + sep + sub[-2:]


def stored_format(rng, region, number):
    """How a CRM user of ``region`` typed ``number``."""
    country, prefix, sub = number
    info = COUNTRIES[country]
    cc, trunk = info["cc"], info["trunk"]
    r = rng.random()
    if country != region:      # foreign numbers carry their country code
        if r < 0.55:
            text = "+%s %s %s" % (cc, prefix, sub)
        elif r < 0.75:
            text = "+%s%s%s" % (cc, prefix, sub)
        elif r < 0.9:
            text = "%s %s %s %s" % (COUNTRIES[region]["idd"], cc, prefix, sub)
        else:
            text = "+%s (%s) %s" % (cc, prefix, _groups(sub))
    elif region == "DE":
        if r < 0.22:
            text = "0%s %s" % (prefix, sub)
        elif r < 0.30:
            text = "0%s/%s" % (prefix, sub)
        elif r < 0.38:
            text = "0%s%s" % (prefix, sub)
        elif r < 0.46:
            text = "(0%s) %s" % (prefix, _groups(sub))
        elif r < 0.66:
            text = "+49 %s %s" % (prefix, sub)
        elif r < 0.74:
            text = "+49%s%s" % (prefix, sub)
        elif r < 0.78:
            text = "+49 (0)%s %s" % (prefix, sub)
        elif r < 0.84:
            text = "0049 %s %s" % (prefix, sub)
        elif r < 0.87:
            text = "0049%s%s" % (prefix, sub)
        elif r < 0.92:
            text = "%s %s" % (prefix, sub)                 # trunk prefix left out
        elif r < 0.99:
            text = "0%s-%s" % (prefix, sub)
        else:
            text = sub                                      # local number, no area code
    else:  # RU
        if r < 0.25:
            text = "8 (%s) %s" % (prefix, _groups(sub))
        elif r < 0.40:
            text = "+7 (%s) %s" % (prefix, _groups(sub))
        elif r < 0.50:
            text = "+7 %s %s" % (prefix, _groups(sub))
        elif r < 0.58:
            text = "8-%s-%s" % (prefix, _groups(sub))
        elif r < 0.66:
            text = "8%s%s" % (prefix, sub)
        elif r < 0.71:
            text = "7%s%s" % (prefix, sub)                 # country code without "+"
        elif r < 0.79:
            text = "+7%s%s" % (prefix, sub)
        elif r < 0.86:
            text = "%s %s %s %s" % (prefix, sub[:3], sub[3:5], sub[5:])
        elif r < 0.94:
            text = "(%s) %s" % (prefix, _groups(sub))
        elif r < 0.99:
            text = "8 %s %s" % (prefix, sub)
        else:
            text = _groups(sub)                             # local number, no area code
    if rng.random() < 0.04:
        text += rng.choice((" доб. %d", " доб %d", " вн. %d") if region == "RU" else
                           (" x%d", " ext. %d", " #%d")) % rng.randint(1, 999)
    return text


def caller_format(rng, region, number):
    """The caller ID a trunk in ``region`` delivers for ``number`` (agi_callerid)."""
    country, prefix, sub = number
    info = COUNTRIES[country]
    national = prefix + sub
    r = rng.random()
    if country != region:
        return ("+" if r < 0.6 else COUNTRIES[region]["idd"]) + info["cc"] + national
    if region == "DE":
        return ("+49" if r < 0.40 else "0" if r < 0.65 else "0049" if r < 0.80 else "49") + national
    return ("+7" if r < 0.40 else "8" if r < 0.70 else "7" if r < 0.90 else "") + national


class Loader(threading.Thread):
    """Loads TSV chunk files (LOAD DATA LOCAL INFILE, else multi-row INSERT) in the background."""

    def __init__(self, conn, method):
        super().__init__(daemon=True)
        self.conn, self.method = conn, method
        self.jobs = queue.Queue(maxsize=2)
        self.loaded, self.warnings, self.error = {}, 0, None

    def run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            table, columns, path, rows = job
            try:
                if self.error is None:
                    self._load(table, columns, path)
                    self.loaded[table] = self.loaded.get(table, 0) + rows
            except Exception as exc:   # reported by the main thread
                self.error = exc
            finally:
                os.unlink(path)

    def _load(self, table, columns, path):
        with self.conn.cursor() as cur:
            if self.method == "infile":
                cur.execute("LOAD DATA LOCAL INFILE %%s INTO TABLE `%s` CHARACTER SET utf8mb4 "
                            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (%s)"
                            % (table, ", ".join("`%s`" % c for c in columns)), (path,))
                self.warnings += getattr(cur, "warning_count", 0) or 0
            else:
                with open(path, encoding="utf-8") as handle:
                    rows = [tuple(None if v == NULL else v for v in line.rstrip("\n").split("\t"))
                            for line in handle]
                stmt = "INSERT INTO `%s` (%s) VALUES (%s)" % (
                    table, ", ".join("`%s`" % c for c in columns), ", ".join(["%s"] * len(columns)))
                for start in range(0, len(rows), 5000):     # PyMySQL turns this into multi-row INSERTs
                    cur.executemany(stmt, rows[start:start + 5000])


def _connect(database, local_infile=True):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=database,
                           charset="utf8mb4", autocommit=True, local_infile=local_infile)


def _infile_works(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT @@local_infile")
        if not cur.fetchone()[0]:
            return False
        path = tempfile.mktemp(suffix=".tsv")
        Path(path).write_text("x\n")
        try:
            cur.execute("CREATE TEMPORARY TABLE crmagi_bench_probe (v varchar(10))")
            cur.execute("LOAD DATA LOCAL INFILE %s INTO TABLE crmagi_bench_probe", (path,))
            cur.execute("DROP TEMPORARY TABLE crmagi_bench_probe")
            return True
        except Exception:
            return False
        finally:
            os.unlink(path)


def _secondary_indexes(conn, table):
    """The KEY clauses of SHOW CREATE TABLE (name, definition)."""
    with conn.cursor() as cur:
        cur.execute("SHOW CREATE TABLE `%s`" % table)
        ddl = cur.fetchone()[1]
    found = []
    for line in ddl.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith(("KEY ", "UNIQUE KEY ")):
            found.append((line.split("`")[1], line))
    return found


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
        for module, tag in (("Accounts", b"a"), ("Contacts", b"c"), ("Leads", b"l")):
            ids = [record_id(self.seed, tag, row) for row in range(self.rows[module])]
            self.ids[module] = ids
            self.order[module] = sorted(range(len(ids)), key=ids.__getitem__)
        first, last, forms, cities = NAMES[args.region]
        self.first, self.last, self.forms, self.cities = first, last, forms, cities

    # -- numbers ---------------------------------------------------------------
    def _slot(self, module, row, col):
        return self.base[module] + row * (3 if module == "Accounts" else 6) + col

    def _stored(self, slot):
        return stored_format(self.rng, self.region, self.space.number(slot))

    def _stamp_pair(self):
        entered = EPOCH_2019 + int(self.rng.random() * SEVEN_YEARS)
        modified = entered + int(self.rng.random() * (EPOCH_2019 + SEVEN_YEARS + 86400 - entered))
        return _stamp(entered), _stamp(modified)

    def _owner(self):
        return self.rng.choice(self.owner_ids) if self.rng.random() > 0.03 else NULL

    # -- tables ----------------------------------------------------------------
    def user_rows(self):
        rows, rng = [], self.rng
        stamp = _stamp(EPOCH_2019)
        for i in range(self.args.users):
            uid = record_id(self.seed, b"u", i)
            ext = str(100 + i) if 100 + i < 1000 else str(1000 + i)
            status = "Inactive" if i % 50 == 49 else "Active"
            if i % 40 == 39:      # a full number in phone_work: not an extension, crmagi drops it
                ext_value = stored_format(rng, self.region, self.space.number(self.total_slots + 10_000_000 + i))
            else:
                ext_value = ext
            first, last = rng.choice(self.first), rng.choice(self.last)
            rows.append((uid, "agent%04d" % i, first, last, status, "0", "0", "0", "0", "1", "Active",
                         ext_value, stamp, stamp, "1"))
            self.users.append({"id": uid, "user_name": "agent%04d" % i, "extension": ext_value,
                               "status": status})
        self.owner_ids = [u["id"] for u in self.users if u["status"] == "Active"] or ["1"]
        return rows

    def account_rows(self, start, stop):
        rng, flags, deleted = self.rng, self.flags["Accounts"], self.deleted["Accounts"]
        ids, order = self.ids["Accounts"], self.order["Accounts"]
        rows = []
        for position in range(start, stop):
            row = order[position]
            entered, modified = self._stamp_pair()
            is_deleted = rng.random() < DELETED
            deleted[row] = is_deleted
            phones = []
            for col, fill in enumerate(ACCOUNT_FILL):
                if rng.random() >= fill:
                    phones.append(NULL)
                    continue
                slot = self._slot("Accounts", row, col)
                if col == 1 and position > 10 and rng.random() < 0.05:   # a branch shares the head office number
                    other = order[rng.randrange(position)]
                    if flags[other * 3] == ORIGINAL:
                        slot = self._slot("Accounts", other, 0)
                        self.dups.setdefault(slot, []).append(("Accounts", row, ACCOUNT_PHONES[col]))
                        flags[row * 3 + col] = DUPLICATE
                        phones.append(self._stored(slot))
                        continue
                flags[row * 3 + col] = ORIGINAL
                phones.append(self._stored(slot))
            name = "%s %s %s" % (rng.choice(COMPANY_WORDS), rng.choice(self.last), rng.choice(self.forms))
            owner = self._owner()
            rows.append((ids[row], name, entered, modified, owner, owner,
                         "1" if is_deleted else "0", owner, rng.choice(("Customer", "Prospect", "Partner")),
                         rng.choice(self.cities), *phones))
        return rows

    def contact_rows(self, start, stop):
        rng, flags, deleted, seed = self.rng, self.flags["Contacts"], self.deleted["Contacts"], self.seed
        account_flags, accounts, account_ids = self.flags["Accounts"], self.rows["Accounts"], self.ids["Accounts"]
        ids, order = self.ids["Contacts"], self.order["Contacts"]
        rows, links = [], []
        for position in range(start, stop):
            row = order[position]
            entered, modified = self._stamp_pair()
            is_deleted = rng.random() < DELETED
            deleted[row] = is_deleted
            account = rng.randrange(accounts) if accounts and rng.random() < 0.8 else None
            if account is not None:
                links.append((record_id(seed, b"ac", row), ids[row], account_ids[account], modified, "0"))
            phones = []
            for col, fill in enumerate(PERSON_FILL):
                if rng.random() >= fill:
                    phones.append(NULL)
                    continue
                slot, text = self._slot("Contacts", row, col), None
                if col == 0 and account is not None and rng.random() < 0.25 and account_flags[account * 3] == ORIGINAL:
                    slot = self._slot("Accounts", account, 0)       # the switchboard, often with an extension
                    text = self._stored(slot)
                    if rng.random() < 0.5 and "x" not in text and "#" not in text and "доб" not in text:
                        text += (" доб. %d" if self.region == "RU" else " x%d") % rng.randint(10, 999)
                elif col == 2 and position > 10 and rng.random() < 0.01:  # shared home number
                    other = order[rng.randrange(position)]
                    if flags[other * 6 + 2] == ORIGINAL:
                        slot = self._slot("Contacts", other, 2)
                        text = self._stored(slot)
                if text is not None:
                    self.dups.setdefault(slot, []).append(("Contacts", row, PERSON_PHONES[col]))
                    flags[row * 6 + col] = DUPLICATE
                    phones.append(text)
                    continue
                flags[row * 6 + col] = ORIGINAL
                phones.append(self._stored(slot))
            owner = self._owner()
            rows.append((ids[row], entered, modified, owner, owner, "1" if is_deleted else "0",
                         owner, rng.choice(self.first), rng.choice(self.last), rng.choice(self.cities),
                         rng.choice(("Cold Call", "Web Site", "Partner", "Email")), *phones))
        return rows, links

    def lead_rows(self, start, stop):
        rng, flags, deleted = self.rng, self.flags["Leads"], self.deleted["Leads"]
        contact_flags, contacts = self.flags["Contacts"], self.rows["Contacts"]
        ids, order = self.ids["Leads"], self.order["Leads"]
        rows = []
        for position in range(start, stop):
            row = order[position]
            entered, modified = self._stamp_pair()
            is_deleted = rng.random() < DELETED
            deleted[row] = is_deleted
            phones = []
            for col, fill in enumerate(LEAD_FILL):
                if rng.random() >= fill:
                    phones.append(NULL)
                    continue
                slot = self._slot("Leads", row, col)
                if col in (0, 1) and contacts and rng.random() < 0.04:   # the same person as a contact
                    other = rng.randrange(contacts)
                    if contact_flags[other * 6 + col] == ORIGINAL:
                        slot = self._slot("Contacts", other, col)
                        self.dups.setdefault(slot, []).append(("Leads", row, PERSON_PHONES[col]))
                        flags[row * 6 + col] = DUPLICATE
                        phones.append(self._stored(slot))
                        continue
                flags[row * 6 + col] = ORIGINAL
                phones.append(self._stored(slot))
            owner = self._owner()
            company = "%s %s %s" % (rng.choice(COMPANY_WORDS), rng.choice(self.last), rng.choice(self.forms))
            rows.append((ids[row], entered, modified, owner, owner, "1" if is_deleted else "0",
                         owner, rng.choice(self.first), rng.choice(self.last), rng.choice(self.cities), company,
                         rng.choice(("New", "Assigned", "In Process")), rng.choice(("Cold Call", "Web Site")),
                         *phones))
        return rows

    # -- samples ----------------------------------------------------------------
    def samples(self, present_count, absent_count):
        rng = random.Random(self.seed * 7919 + 1)
        columns = {"Accounts": ACCOUNT_PHONES, "Contacts": PERSON_PHONES, "Leads": PERSON_PHONES}
        tags = {"Accounts": b"a", "Contacts": b"c", "Leads": b"l"}
        weights = [(m, self.rows[m]) for m in MODULE_ORDER if self.rows[m]]
        total = sum(w for _, w in weights)
        present, tries = [], 0
        while len(present) < present_count and total and tries < present_count * 50:
            tries += 1
            pick = rng.randrange(total)
            for module, count in weights:
                if pick < count:
                    break
                pick -= count
            row = pick
            if self.deleted[module][row]:
                continue
            width = len(columns[module])
            cols = [c for c in range(width) if self.flags[module][row * width + c] == ORIGINAL
                    and columns[module][c] in SEARCHED[module]]
            if not cols:
                continue
            col = rng.choice(cols)
            slot = self._slot(module, row, col)
            number = self.space.number(slot)
            holders = [(module, row, columns[module][col])] + self.dups.get(slot, [])
            group = [[m, record_id(self.seed, tags[m], r), c] for m, r, c in holders
                     if not self.deleted[m][r] and c in SEARCHED[m]]
            expect_module = next(m for m in MODULE_ORDER if any(g[0] == m for g in group))
            present.append({"caller": caller_format(rng, self.region, number),
                            "e164": "+%s%s%s" % (COUNTRIES[number[0]]["cc"], number[1], number[2]),
                            "module": module, "id": record_id(self.seed, tags[module], row),
                            "column": columns[module][col], "expect_module": expect_module,
                            "group": group})
        absent = []
        for i in range(absent_count):
            number = self.space.number(self.total_slots + rng.randrange(max(1, self.total_slots)))
            absent.append({"caller": caller_format(rng, self.region, number),
                           "e164": "+%s%s%s" % (COUNTRIES[number[0]]["cc"], number[1], number[2])})
        return present, absent


def generate(args):
    """Create/fill the database; returns the report dict (also written into the sample file)."""
    database, created = args.database, False
    if not database:
        database, _ = create_database()
        created = True
    conn = _connect(database)
    method = args.method
    if method == "auto":
        method = "infile" if _infile_works(conn) else "insert"
    gen = Generator(args)
    counts = {"users": args.users, "accounts": args.accounts, "contacts": args.contacts, "leads": args.leads}
    print("generating into %s (%s): %s, region %s, seed %d, loading with %s" % (
        database, "created" if created else "existing",
        ", ".join("%d %s" % (v, k) for k, v in counts.items()), args.region, args.seed,
        "LOAD DATA LOCAL INFILE" if method == "infile" else "multi-row INSERT"), file=sys.stderr)
    started = time.monotonic()
    tmpdir = tempfile.mkdtemp(prefix="crmagi-gen-")
    dropped = {}
    with conn.cursor() as cur:
        cur.execute("SET SESSION unique_checks=0, foreign_key_checks=0")
        if not args.keep_indexes:
            for table in INDEXED_TABLES:
                keys = _secondary_indexes(conn, table)
                if keys:
                    cur.execute("ALTER TABLE `%s` %s" % (table, ", ".join("DROP INDEX `%s`" % n for n, _ in keys)))
                    dropped[table] = keys
    loader = Loader(conn, method)
    loader.start()
    total_rows = sum(counts.values())
    progress = Progress("rows", total_rows)
    produced, links = 0, []

    def put(table, columns, rows):
        nonlocal produced
        if not rows:
            return
        if loader.error is not None:
            raise loader.error
        fd, path = tempfile.mkstemp(suffix=".tsv", dir=tmpdir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join("\t".join(row) + "\n" for row in rows))
        loader.jobs.put((table, columns, path, len(rows)))
        if table != "accounts_contacts":
            produced += len(rows)
        progress.update(sum(v for k, v in loader.loaded.items() if k != "accounts_contacts"))

    try:
        put("users", USER_COLS, gen.user_rows())
        for start in range(0, args.accounts, args.chunk):
            put("accounts", ACCOUNT_COLS, gen.account_rows(start, min(args.accounts, start + args.chunk)))
        for start in range(0, args.contacts, args.chunk):
            rows, chunk_links = gen.contact_rows(start, min(args.contacts, start + args.chunk))
            put("contacts", CONTACT_COLS, rows)
            links += chunk_links
        for start in range(0, args.leads, args.chunk):
            put("leads", LEAD_COLS, gen.lead_rows(start, min(args.leads, start + args.chunk)))
        links.sort()                      # by id, like the other tables
        link_rows = len(links)
        for start in range(0, link_rows, args.chunk):
            put("accounts_contacts", LINK_COLS, links[start:start + args.chunk])
        links = None
        loader.jobs.put(None)
        loader.join()
        if loader.error is not None:
            raise loader.error
        progress.close()
    finally:
        if loader.is_alive():
            loader.jobs.put(None)
            loader.join()
        load_seconds = time.monotonic() - started
        index_started = time.monotonic()
        with conn.cursor() as cur:
            for table, keys in dropped.items():
                print("rebuilding the %d secondary indexes of %s" % (len(keys), table), file=sys.stderr)
                cur.execute("ALTER TABLE `%s` %s" % (table, ", ".join("ADD " + ddl for _, ddl in keys)))
            for table in INDEXED_TABLES + ("users",):
                cur.execute("ANALYZE TABLE `%s`" % table)
                cur.fetchall()
        index_seconds = time.monotonic() - index_started
        os.rmdir(tmpdir) if not os.listdir(tmpdir) else None
    seconds = time.monotonic() - started
    present, absent = gen.samples(args.samples_count, args.absent_count)
    all_rows = total_rows + link_rows
    report = {
        "database": database, "created": created, "region": args.region, "seed": args.seed,
        "method": method, "rows": dict(counts, accounts_contacts=link_rows), "total_rows": all_rows,
        "phone_numbers": sum(f.count(ORIGINAL) + f.count(DUPLICATE) for f in gen.flags.values()),
        "duplicate_numbers": sum(f.count(DUPLICATE) for f in gen.flags.values()),
        "load_seconds": round(load_seconds, 2), "index_seconds": round(index_seconds, 2),
        "seconds": round(seconds, 2), "rows_per_second": round(all_rows / max(seconds, 1e-9)),
        "load_warnings": loader.warnings,
    }
    samples_path = Path(args.samples or os.path.join(tempfile.gettempdir(), "crmagi-bench",
                                                       database + ".samples.json"))
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path.write_text(json.dumps({"meta": report, "users": gen.users, "present": present,
                                        "absent": absent}, ensure_ascii=False))
    report["samples"] = str(samples_path)
    print("generated %d rows (%d phone numbers, %d duplicates) in %.1f s (load %.1f s + indexes %.1f s): "
          "%d rows/s; samples: %s (%d present, %d absent)" % (
              all_rows, report["phone_numbers"], report["duplicate_numbers"], seconds, load_seconds,
              index_seconds, report["rows_per_second"], samples_path, len(present), len(absent)),
          file=sys.stderr)
    conn.close()
    return report


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", help="fill this existing SuiteCRM database (default: create crmagi_bench_*)")
    p.add_argument("--contacts", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=300_000)
    p.add_argument("--leads", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=200, help="agents with extensions (owners of the records)")
    p.add_argument("--region", choices=sorted(MIX), default="DE", help="country of the CRM's numbers")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chunk", type=int, default=50_000, help="rows per LOAD DATA / INSERT batch")
    p.add_argument("--method", choices=("auto", "infile", "insert"), default="auto")
    p.add_argument("--keep-indexes", action="store_true",
                   help="load with the secondary indexes in place (slower; for a database in use)")
    p.add_argument("--samples", help="sample caller file to write (default: $TMPDIR/crmagi-bench/<db>.samples.json)")
    p.add_argument("--samples-count", type=int, default=20_000, help="known-present caller numbers")
    p.add_argument("--absent-count", type=int, default=5_000, help="known-absent caller numbers")
    p.add_argument("--json", help="write the report as JSON to this file")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    report = generate(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
