"""bench/generate.py's data shapes: the SuiteCRM tables' columns it fills, how often each phone
column is filled, the names it draws from, and the deterministic ids and timestamps of its rows.

A phone slot's state (``flags``): EMPTY, ORIGINAL (its own number) or DUPLICATE (the number of
another slot, listed in the generator's ``dups``); the samples are drawn from ORIGINAL slots."""
import hashlib
import time

MODULE_ORDER = ("Contacts", "Accounts", "Leads")   # crmagi's default [lookup] modules
PERSON_PHONES = ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax", "assistant_phone")
ACCOUNT_PHONES = ("phone_office", "phone_alternate", "phone_fax")
PHONES = {"Accounts": ACCOUNT_PHONES, "Contacts": PERSON_PHONES, "Leads": PERSON_PHONES}
SEARCHED = {"Contacts": ("phone_work", "phone_mobile", "phone_home", "phone_other", "assistant_phone"),
            "Accounts": ("phone_office", "phone_alternate"),
            "Leads": ("phone_work", "phone_mobile", "phone_home", "phone_other", "assistant_phone")}
TAGS = {"Accounts": b"a", "Contacts": b"c", "Leads": b"l"}    # record_id's module tag
PERSON_FILL = (0.85, 0.60, 0.25, 0.05, 0.10, 0.03)
LEAD_FILL = (0.80, 0.55, 0.20, 0.04, 0.06, 0.02)
ACCOUNT_FILL = (0.95, 0.20, 0.35)
DELETED = 0.02
EMPTY, ORIGINAL, DUPLICATE = 0, 1, 2

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
NULL = "\\N"                    # LOAD DATA's NULL (the INSERT path turns it back into None)
EPOCH_2019 = 1546300800
SEVEN_YEARS = 7 * 365 * 86400


def record_id(seed, tag, row):
    """A deterministic SuiteCRM-shaped id (8-4-4-4-12 hex) for row ``row`` of module ``tag``."""
    h = hashlib.blake2b(b"%d:%s:%d" % (seed, tag, row), digest_size=16).hexdigest()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def stamp(t):
    """A SuiteCRM DATETIME (UTC) for the epoch second ``t``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
