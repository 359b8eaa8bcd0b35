"""The one CRM record crmagi creates for itself: the virtual account of unidentified callers."""
from datetime import datetime, timezone

from sqlalchemy import select

from .db import Schema

VIRTUAL_ACCOUNT_NAME = "Unidentified callers (crmagi)"


def virtual_account_exists(engine, account_id) -> bool:
    accounts = Schema(engine, ["accounts"]).table("accounts")
    with engine.connect() as conn:
        row = conn.execute(select(accounts.c.id).where(accounts.c.id == account_id,
                                                       accounts.c.deleted == 0)).first()
    return row is not None


def ensure_virtual_account(engine, account_id, system_user="1") -> bool:
    """Create the account when missing; True when it was created."""
    if virtual_account_exists(engine, account_id):
        return False
    accounts = Schema(engine, ["accounts"]).table("accounts")
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    values = {"id": account_id, "name": VIRTUAL_ACCOUNT_NAME, "date_entered": now, "date_modified": now,
              "created_by": system_user, "modified_user_id": system_user, "assigned_user_id": system_user,
              "deleted": 0, "description": "Calls from numbers crmagi could not identify are linked here."}
    values = {key: value for key, value in values.items() if key in accounts.c}
    with engine.begin() as conn:
        conn.execute(accounts.delete().where(accounts.c.id == account_id))   # a soft-deleted leftover
        conn.execute(accounts.insert().values(**values))
    return True
