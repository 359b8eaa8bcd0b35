"""Plugin API messages: JSON text frames, one object each (pure functions).

Every message is checked against its JSON Schema in schemas/ (the same files
README.rst points integrators to), so what is documented is what is enforced.
"""
import json
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator

VERSION = 1
MAX_MESSAGE = 4096        # the popup server refuses bigger frames (webpush/messages.py)
SCHEMAS = Path(__file__).parent / "schemas"
FROM_PLUGIN = ("hello", "lookup", "call", "command_result", "ping")
# The scope a message needs; hello and ping need none.
SCOPE_OF = {"lookup": "lookup", "call": "events", "command_result": "originate"}


class BadMessage(ValueError):
    """Why a message was refused; the text is sent back in an ``error`` message."""


@lru_cache(maxsize=None)
def validator(name):
    with open(SCHEMAS / (name + ".json"), encoding="utf-8") as handle:
        schema = json.load(handle)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def decode(text) -> dict:
    """A plugin's message, checked against its schema; BadMessage says what is wrong."""
    if not isinstance(text, str):
        raise BadMessage("closed" if text is None else "binary frames are not accepted")
    if len(text) > MAX_MESSAGE:
        raise BadMessage("message larger than %d bytes" % MAX_MESSAGE)
    try:
        message = json.loads(text)
    except RecursionError:
        raise BadMessage("JSON nested too deep") from None
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(message, dict) or message.get("type") not in FROM_PLUGIN:
        raise BadMessage("unknown message type (expected one of %s)" % ", ".join(FROM_PLUGIN))
    check(message)
    return message


def check(message):
    """Raise BadMessage naming the first schema violation of ``message``."""
    error = next(iter(validator(message["type"]).iter_errors(message)), None)
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or message["type"]
        raise BadMessage("%s: %s" % (where, error.message[:200]))


def encode(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def welcome(tenant, scopes):
    return {"type": "welcome", "tenant": tenant, "scopes": list(scopes)}


def refused(reason):
    return {"type": "refused", "reason": reason}


def error(reason, message_id=None):
    out = {"type": "error", "reason": reason}
    if message_id is not None:
        out["id"] = message_id
    return out


def ack(call, event, call_id):
    return {"type": "ack", "call": call, "event": event, "call_id": call_id}


def lookup_result(message_id, result):
    """The dialplan contract (agi/fastagi/routes.py CONTRACT) as a message; ``result`` None = error."""
    caller = result.caller if result is not None else None
    owner = caller.owner if caller is not None else None
    return {"type": "lookup_result", "id": message_id, "status": result.status if result is not None else "error",
            "module": caller.module if caller else None, "record_id": caller.record_id if caller else None,
            "record_name": caller.name if caller else None, "owner_user_id": owner.id if owner else None,
            "owner_exten": (owner.extension or None) if owner else None}


def command(command_id, action, **fields):
    return dict({"type": "command", "id": command_id, "action": action},
                **{key: value for key, value in fields.items() if value is not None})
