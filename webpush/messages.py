"""The popup websocket protocol: JSON text frames, one object each (pure functions).

Browser -> server
  {"type": "hello", "token": T, "tab": "<random tab id>", "visible": bool, "focused": bool,
   "user": "<users.id the page is for>"}
      first message; anything else first, or a bad token, is refused.  ``user`` (optional)
      must be the token's user: a page holding another user's token is refused.
  {"type": "state", "visible": bool, "focused": bool}
      the tab was shown/hidden/focused/blurred: the server moves open popups to the tab
      the user is working in.
  {"type": "dismiss", "call": C}        the user closed the popup of call C.
  {"type": "transfer", "call": C, "exten": E}
      click-to-transfer from the popup (transfer button or phone book row).
  {"type": "dial", "number": N, "module": M, "record": R, "ref": F}
      click-to-call: N as the page shows it (a tel: link, a phone book extension); M and R
      the record it was clicked on (a hint: crmagi checks the record carries N before it
      links the Call to it); F the page's own id for this click, echoed in dial_status.
  {"type": "recordings", "calls": [C, ...]}
      the Call ids shown on the page (at most MAX_CALLS): which have a recording to play.
  {"type": "ping"}

Server -> browser
  {"type": "welcome", "user": U, "token_expires": unix, "lang": L, "texts": {msgid: text}}
      L: the catalogue of the user's SuiteCRM language (en, ru, de); texts: the script's own
      texts in it (t() in popup.js and recordings.js), empty for English.
  {"type": "refused", "reason": "...", "text": "..."}  then the socket closes (code 4401 or 4403).
      reason: English (the console, the script's logic); text: the sentence the page shows,
      in the user's language when the token named the user.
  {"type": "token", "token": T}         a fresh token, before the old one expires, so a
                                        reconnect after a crmagi restart still authenticates.
  {"type": "popup", "call": C, "html": H, "title": S, "notify": S}
      show (or replace) the popup of call C; H is the rendered, escaped fragment.
  {"type": "update", "call": C, "state": S, "text": S}
      S: answered | answered_elsewhere | transferred | ended.
  {"type": "close", "call": C}          remove the popup of call C from this tab.
  {"type": "result", "call": C, "ok": bool, "text": S}   outcome of a transfer request.
  {"type": "dial_status", "ref": F, "state": S, "reason": C, "text": T, "call": U}
      progress of a click-to-call.  S: accepted | refused (first, within a second), then
      ringing (the user's phone) | connecting (answered, dialling the number) | connected |
      failed | ended.  C: a code for refused/failed/ended (your_busy, your_noanswer,
      your_offline, number_busy, number_noanswer, ...); T: the sentence shown; U: the
      channel id of the call once placed.
  {"type": "recordings", "items": [{"call": C, "url": P, "download": P, "expires": unix}
                                    | {"call": C, "missing": "recording not available"}]}
      P is a path on this server (webpush/recording_urls.py); Calls the user may not see, or
      without a recording, are left out.
  {"type": "missed", "html": H, "count": N}
      the user's missed-calls list (webpush/missedlist.py), on connect and when it changes;
      H is the rendered, escaped fragment (empty list: N is 0), shown beside the popups.
  {"type": "pong"}
"""
import json

MAX_MESSAGE = 4096        # browser messages are tiny; anything bigger is junk
CLIENT_TYPES = ("hello", "state", "dismiss", "transfer", "dial", "ping", "recordings")
MAX_CALLS = 100           # Call ids in one recordings request (a list view shows at most 100 rows)


class BadMessage(ValueError):
    pass


def encode(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def decode(text) -> dict:
    """A browser message, checked for shape; BadMessage says what is wrong."""
    if isinstance(text, (bytes, bytearray)):
        raise BadMessage("binary frames are not accepted")
    if text is None:
        raise BadMessage("closed")
    if len(text) > MAX_MESSAGE:
        raise BadMessage("message too large")
    try:
        message = json.loads(text)
    except RecursionError:      # "[[[[..." nests deeper than the decoder's stack, within MAX_MESSAGE
        raise BadMessage("JSON nested too deep") from None
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(message, dict) or message.get("type") not in CLIENT_TYPES:
        raise BadMessage("unknown message type")
    for key in ("token", "tab", "call", "exten", "user", "number", "module", "record", "ref"):
        if key in message and not isinstance(message[key], str):
            raise BadMessage("%s must be a string" % key)
    calls = message.get("calls")
    if "calls" in message and not (isinstance(calls, list) and len(calls) <= MAX_CALLS
                                   and all(isinstance(c, str) and 0 < len(c) <= 36 for c in calls)):
        raise BadMessage("calls must be a list of at most %d Call ids" % MAX_CALLS)
    for key in ("visible", "focused"):
        if key in message and not isinstance(message[key], bool):
            raise BadMessage("%s must be true or false" % key)
    return message


def recordings(items):
    return {"type": "recordings", "items": items}


def refused(reason, text=None):
    message = {"type": "refused", "reason": reason}
    if text is not None:
        message["text"] = text
    return message


def popup(call_id, html, title, notify):
    return {"type": "popup", "call": call_id, "html": html, "title": title, "notify": notify}


def update(call_id, state, text):
    return {"type": "update", "call": call_id, "state": state, "text": text}


def close(call_id):
    return {"type": "close", "call": call_id}


def result(call_id, ok, text):
    return {"type": "result", "call": call_id, "ok": ok, "text": text}


def dial_status(ref, state, reason, text, call=""):
    return {"type": "dial_status", "ref": ref, "state": state, "reason": reason, "text": text, "call": call}


def missed(html, count):
    return {"type": "missed", "html": html, "count": count}
