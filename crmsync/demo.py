"""The demo CRM behind `crmagi demo`: an SQLite file with the SuiteCRM tables crmagi uses.

The DDL (demo_schema.sql) is converted from the real SuiteCRM 7.14.6 schema;
the rows use the numbers of the recorded Asterisk calls (+4930111111, ...)
in the mixed formats people really type into a CRM.
"""
import sqlite3
from datetime import datetime, timezone
from importlib import resources

VIRTUAL_ACCOUNT = "crmagi-virtual-account"
NOW = datetime(2026, 11, 26, 9, 0, 0, tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

USERS = [  # id, user_name, first, last, phone_work (= extension)
    ("1", "admin", "", "Administrator", None),
    ("seed_sally_id", "sally", "Sally", "Bronsen", "101"),
    ("seed_max_id", "max", "Max", "Jensen", "102"),
    ("seed_will_id", "will", "Will", "Westin", "103"),
    ("seed_chris_id", "chris", "Chris", "Olliver", "104"),
]
ACCOUNTS = [  # id, name, phone_office, owner
    ("demo-account-000000000000000000001", "Spreewald Logistik GmbH", "030 555555", "seed_sally_id"),
    ("demo-account-000000000000000000002", "Havel Consulting", "+49 30 7001000", "seed_max_id"),
    (VIRTUAL_ACCOUNT, "Unidentified callers (crmagi)", None, "1"),
]
CONTACTS = [  # id, first, last, phone_work, phone_mobile, owner, account
    ("demo-contact-000000000000000000001", "Anna", 'O\'Neil "Annie"', "+49 (30) 111-111", None,
     "seed_sally_id", "demo-account-000000000000000000001"),
    ("demo-contact-000000000000000000002", "Bernd", "Brandt", "030 222222", "+49 171 2222222",
     "seed_max_id", "demo-account-000000000000000000002"),
    ("demo-contact-000000000000000000003", "Carla", "Cortez", "0049 30 333333", None,
     "seed_will_id", None),
]
LEADS = [  # id, first, last, phone_mobile, owner
    ("demo-lead-0000000000000000000000001", "Dieter", "Dorn", "(030) 444-444", "seed_chris_id"),
]


def create_demo_db(path):
    """Create (or re-create) the demo database at ``path``; returns the SQLAlchemy URL."""
    ddl = resources.files("crmsync").joinpath("demo_schema.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(path)
    try:
        existing = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "contacts" not in existing:
            conn.executescript(ddl)
            _rows(conn)
        if "acl_actions" not in existing:       # also into a demo CRM made before popups checked access
            conn.executescript(resources.files("crmsync").joinpath("demo_acl.sql").read_text(encoding="utf-8"))
        conn.commit()
    finally:
        conn.close()
    return "sqlite:///" + str(path)


def _rows(conn):
    for uid, name, first, last, ext in USERS:
        conn.execute("INSERT INTO users (id, user_name, first_name, last_name, phone_work, status, deleted,"
                     " is_admin, is_group, portal_only, date_entered, date_modified)"
                     " VALUES (?,?,?,?,?,'Active',0,?,0,0,?,?)",
                     (uid, name, first, last, ext, int(uid == "1"), NOW, NOW))
    for aid, name, phone, owner in ACCOUNTS:
        conn.execute("INSERT INTO accounts (id, name, phone_office, assigned_user_id, deleted, date_entered,"
                     " date_modified) VALUES (?,?,?,?,0,?,?)", (aid, name, phone, owner, NOW, NOW))
    for cid, first, last, work, mobile, owner, account in CONTACTS:
        conn.execute("INSERT INTO contacts (id, first_name, last_name, phone_work, phone_mobile,"
                     " assigned_user_id, deleted, date_entered, date_modified) VALUES (?,?,?,?,?,?,0,?,?)",
                     (cid, first, last, work, mobile, owner, NOW, NOW))
        if account:
            conn.execute("INSERT INTO accounts_contacts (id, contact_id, account_id, date_modified, deleted)"
                         " VALUES (?,?,?,?,0)", ("ac-" + cid[-20:], cid, account, NOW))
    for lid, first, last, mobile, owner in LEADS:
        conn.execute("INSERT INTO leads (id, first_name, last_name, phone_mobile, assigned_user_id, deleted,"
                     " date_entered, date_modified) VALUES (?,?,?,?,?,0,?,?)",
                     (lid, first, last, mobile, owner, NOW, NOW))
