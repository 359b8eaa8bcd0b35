"""The call popup's HTML fragment, title and notification line, rendered server side.

Three forms (``kind``): ``known`` (the lookup found a record), ``unknown`` (no
match, or the CRM did not answer in time) and ``unidentified`` (withheld number).
Everything from the network or the CRM (number, CNAM, names, subjects) is
untrusted: the Jinja environment autoescapes every value, and the fragment has
no inline script or event handler (popup.js binds by ``data-crmagi-*``
attributes, so a strict Content-Security-Policy holds).

The history and the phone book are extras: when the CRM cannot give them the
popup still shows, with a short note instead.

A found record is shown (name, account, owner, history and its recordings, links)
only to a user SuiteCRM lets view it (crmsync/access.py); anyone else gets the
``restricted`` form: the module and "a record you cannot open", the call's own
actions and the phone book.  A CRM that cannot tell counts as a no.  The
decision is kept per (call, user, record) for a minute, so the re-renders of a
call (lookup arriving late, transfer) ask the CRM once.
"""
import logging
import re
import time
from datetime import timezone
from typing import NamedTuple
from urllib.parse import quote

import phonenumbers
from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError

from crmsync.db import CrmUnavailable, SchemaError

log = logging.getLogger(__name__)

TEMPLATE = "popup.html.j2"
_CRM_ERRORS = (CrmUnavailable, SchemaError, SQLAlchemyError)
_HISTORY_TTL = 10.0      # seconds: a queue call rings many users at once, ask the CRM once
_HISTORY_KEEP = 256
_ACCESS_TTL = 60.0       # seconds a user's right to view a call's record is kept
_NOTIFY_MAX = 160


class Rendered(NamedTuple):
    html: str
    title: str       # for the tab title flash: "Call from Ann Smith"
    notify: str      # plain text for a desktop notification


def environment() -> Environment:
    """The one Jinja environment: templates shipped as package ``webpush.templates``, strict, escaping.

    autoescape is forced (not select_autoescape): the names end in .j2, which
    select_autoescape would not recognise as HTML.
    """
    env = Environment(loader=PackageLoader("webpush.templates", "."), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(isotime=_isotime, shorttime=_shorttime, staff_key=_staff_key)
    return env


def _isotime(when):
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shorttime(when):
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _staff_key(user):
    """What the phone book search matches: name, extension, department, title, lowercase."""
    parts = (user.full_name, user.extension, user.department, user.title)
    return " ".join(p for p in parts if p).lower()


def _plain(text):
    """One line of plain text (CNAM and CRM names may hold newlines or control characters)."""
    return re.sub(r"[\s\x00-\x1f\x7f]+", " ", text or "").strip()


def _display_number(number, e164):
    """The international form when the number is valid ("+1 650-253-0000"), else as received."""
    if e164:
        try:
            parsed = phonenumbers.parse(e164)
        except phonenumbers.NumberParseException:
            return number
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return number


class _Recent:
    """A small memo of CRM answers, each kept ``ttl`` seconds (at most ``keep`` before a sweep)."""

    def __init__(self, ttl, keep=_HISTORY_KEEP):
        self.ttl, self.keep, self._items = ttl, keep, {}

    def get(self, key, compute):
        now = time.monotonic()
        cached = self._items.get(key)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        value = compute()
        if len(self._items) >= self.keep:
            self._items = {k: v for k, v in self._items.items() if now - v[0] < self.ttl}
        self._items[key] = (now, value)
        return value


class PopupContent:
    def __init__(self, directory, history, site_url="", anonymous_account="", history_limit=10, access=None):
        self.directory = directory
        self.history = history
        self.access = access  # crmsync.access.RecordAccess; None: no CRM ACL (every user views every record)
        self.site_url = site_url or ""
        self.anonymous_account = anonymous_account or ""
        self.history_limit = history_limit
        self.env = environment()
        self._recent = _Recent(_HISTORY_TTL)     # (call id, module, record id) -> history items
        self._allowed = _Recent(_ACCESS_TTL)     # (call id, user id, module, record id) -> may view

    # -- URLs ------------------------------------------------------------------

    def url(self, path):
        """A relative ``index.php?...`` path, joined to site_url when one is configured."""
        return self.site_url.rstrip("/") + "/" + path if self.site_url else path

    def _index(self, **params):
        query = "&".join("%s=%s" % (key, quote(str(value), safe="")) for key, value in params.items())
        return self.url("index.php?" + query)

    def record_url(self, module, record_id):
        return self._index(module=module, action="DetailView", record=record_id)

    # -- rendering ---------------------------------------------------------------

    def render(self, call, for_user=None) -> Rendered:
        result = call.result
        status = result.status if result else None
        kind = {"found": "known", "anonymous": "unidentified"}.get(status, "unknown")
        if kind == "known" and not self._may_view(call, result.caller, for_user):
            kind = "restricted"
        number = _display_number(call.number, result.e164 if result else None) or "withheld"
        context = dict(
            kind=kind, call_id=call.call_id, crm_url=self.url, number=number, inbound=call.direction != "Outbound",
            dial_number=call.number if kind != "unidentified" else "",
            queue=call.queue or "", cnam=_plain(call.caller_name), lookup_failed=result is None,
            edit_call_url=self._index(module="Calls", action="EditView", record=call.call_id),
            staff=self._staff(for_user), **getattr(self, "_" + kind)(call, result, for_user))
        html = self.env.get_template(TEMPLATE).render(context)
        title, notify = self._texts(kind, call, number, result)
        return Rendered(html, title, notify)

    def _known(self, call, result, for_user):
        caller = result.caller
        owner = caller.owner
        mine = bool(owner and for_user and owner.id == for_user.id)
        return dict(
            module=caller.module, record_id=caller.record_id, name=caller.name or "(no name)",
            account=caller.account_name or "",
            record_url=self.record_url(caller.module, caller.record_id),
            history=self._history(call, caller), owner=owner, owner_is_you=mine,
            transfer_owner=bool(owner and owner.extension and not mine))

    @staticmethod
    def _restricted(_call, result, _for_user):
        return dict(module=result.caller.module)

    def _may_view(self, call, caller, user):
        if self.access is None or user is None:
            return True
        key = (call.call_id, user.id, caller.module, caller.record_id)
        table = next((spec.table for spec in self.directory.rules.modules if spec.name == caller.module), None)
        try:    # a failure is not kept: the next render of the call asks again
            return table is not None and self._allowed.get(key, lambda: self.access.can_view(
                user.id, caller.module, table, caller.record_id))
        except _CRM_ERRORS as exc:
            log.warning("popup: cannot tell whether user %s may view %s %s, so not shown: %s",
                        user.id, caller.module, caller.record_id, exc)
            return False

    def _unknown(self, call, result, _for_user):
        # The E.164 form, when known, is what a later lookup matches best (rule "e164").
        prefill = (result.e164 if result else None) or call.number
        return dict(
            create_contact_url=self._index(module="Contacts", action="EditView", phone_work=prefill),
            create_lead_url=self._index(module="Leads", action="EditView", phone_work=prefill))

    def _unidentified(self, _call, _result, _for_user):
        account = self.anonymous_account
        return dict(anonymous_url=self._index(module="Accounts", action="DetailView", record=account)
                    if account else "")

    def _history(self, call, caller):
        """The record's recent activities (without this call), or None when the CRM cannot tell."""
        try:
            return self._recent.get((call.call_id, caller.module, caller.record_id), lambda: self.history.recent(
                caller.module, caller.record_id, limit=self.history_limit, exclude=(call.call_id,)))
        except _CRM_ERRORS as exc:
            log.warning("popup of call %s: history unavailable: %s", call.call_id, exc)
            return None

    def _staff(self, for_user):
        """The phone book, without the user it is rendered for."""
        try:
            staff = self.directory.staff()
        except _CRM_ERRORS as exc:
            log.warning("popup: phone book unavailable: %s", exc)
            return None
        return [user for user in staff if for_user is None or user.id != for_user.id]

    @staticmethod
    def _texts(kind, call, number, result):
        """(title, notify): plain text, the browser sets them with textContent/Notification."""
        towards = "from" if call.direction != "Outbound" else "to"
        cnam = _plain(call.caller_name)
        if kind == "known":
            caller = result.caller
            who = _plain(caller.name) or number
            company = _plain(caller.account_name)
            notify = "%s — %s%s (%s)" % (number, who, ", " + company if company else "", caller.module)
        elif kind == "restricted":
            who = number
            notify = "%s — a %s record you cannot open" % (number, result.caller.module)
        elif kind == "unidentified":
            who = "a withheld number"
            notify = "Withheld number" + (" — caller ID: %s" % cnam if cnam else "")
        else:
            who = number
            notify = "%s — unknown number%s" % (number, " (caller ID: %s)" % cnam if cnam else "")
        return _plain("Call %s %s" % (towards, who))[:_NOTIFY_MAX], notify[:_NOTIFY_MAX]
