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

from crmlocale import catalogues, dates
from crmlocale.catalogues import N_
from crmsync.db import CrmUnavailable, SchemaError
from crmsync.userlocale import UserLocale

log = logging.getLogger(__name__)

TEMPLATE = "popup.html.j2"
_CRM_ERRORS = (CrmUnavailable, SchemaError, SQLAlchemyError)
_HISTORY_TTL = 10.0      # seconds: a queue call rings many users at once, ask the CRM once
_HISTORY_KEEP = 256
_ACCESS_TTL = 60.0       # seconds a user's right to view a call's record is kept
_NOTIFY_MAX = 160
# Values SuiteCRM stores as keys (call_status_dom, call_direction_dom, dom_email_status ...) and the history's
# kinds: the popup shows them in the user's language.
CRM_WORDS = (N_("Call"), N_("Meeting"), N_("Note"), N_("Task"), N_("Email"), N_("Held"), N_("Not Held"),
             N_("Completed"), N_("Deferred"), N_("Inbound"), N_("Outbound"), N_("Contacts"), N_("Accounts"),
             N_("Leads"), N_("sent"), N_("archived"), N_("read"), N_("replied"), N_("unread"), N_("draft"))


class Rendered(NamedTuple):
    html: str
    title: str       # for the tab title flash: "Call from Ann Smith"
    notify: str      # plain text for a desktop notification


def environment(language=None) -> Environment:
    """A Jinja environment for one language: templates shipped as package ``webpush.templates``,
    strict, escaping, ``_()`` from the language's catalogue (English without one).

    autoescape is forced (not select_autoescape): the names end in .j2, which
    select_autoescape would not recognise as HTML.  newstyle gettext escapes the
    values put into a translated text, as ``{{ }}`` does.
    """
    env = Environment(loader=PackageLoader("webpush.templates", "."), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, extensions=["jinja2.ext.i18n"])
    translations = (language or catalogues.language("")).translations
    env.install_gettext_translations(translations, newstyle=True)
    # A CRM value (a status, a module name) translated as it is: _() would %-format it.
    env.filters.update(isotime=_isotime, staff_key=_staff_key, word=translations.gettext)
    return env


def _isotime(when):
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(locale):
    """The templates' ``when(datetime)``: the user's date and time format, in their zone."""
    return lambda moment: dates.display(moment, locale.date_format, locale.time_format, locale.timezone)


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
    def __init__(self, directory, history, site_url="", anonymous_account="", history_limit=10, locales=None,
                 site_locale=UserLocale(), access=None):
        self.directory = directory
        self.history = history
        self.access = access  # crmsync.access.RecordAccess; None: no CRM ACL (every user views every record)
        self.site_url = site_url or ""
        self.anonymous_account = anonymous_account or ""
        self.history_limit = history_limit
        self.locales = locales               # crmsync.userlocale.UserLocales, or None: the site's for all
        self.site_locale = site_locale
        self.env = environment()
        self._envs = {catalogues.SOURCE: self.env}    # language code -> Environment
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
        if kind == "known" and not self.may_view(for_user.id if for_user else None, result.caller.module,
                                                 result.caller.record_id, about=call.call_id):
            kind = "restricted"
        locale = self.locale_of(for_user.id if for_user else None)
        language = catalogues.language(locale.language)
        number = _display_number(call.number, result.e164 if result else None) or language.gettext("withheld")
        context = dict(
            kind=kind, call_id=call.call_id, crm_url=self.url, number=number, inbound=call.direction != "Outbound",
            when=_when(locale),
            dial_number=call.number if kind != "unidentified" else "",
            queue=call.queue or "", cnam=_plain(call.caller_name), lookup_failed=result is None,
            edit_call_url=self._index(module="Calls", action="EditView", record=call.call_id),
            staff=self._staff(for_user), **getattr(self, "_" + kind)(call, result, for_user))
        html = self._env(language).get_template(TEMPLATE).render(context)
        title, notify = self._texts(kind, call, number, result, language.gettext)
        return Rendered(html, title, notify)

    def locale_of(self, user_id):
        """The user's SuiteCRM language, formats and zone; the site's when unknown."""
        if self.locales is None or user_id is None:
            return self.site_locale
        return self.locales.get(user_id)

    def render_for(self, template, user_id, **context):
        """Another fragment (the missed-calls list) in the user's language, formats and zone."""
        locale = self.locale_of(user_id)
        env = self._env(catalogues.language(locale.language))
        return env.get_template(template).render(when=_when(locale), **context)

    def _env(self, language):
        env = self._envs.get(language.code)
        if env is None:
            env = self._envs[language.code] = environment(language)
        return env

    def _known(self, call, result, for_user):
        caller = result.caller
        owner = caller.owner
        mine = bool(owner and for_user and owner.id == for_user.id)
        return dict(
            module=caller.module, record_id=caller.record_id, name=caller.name or "",
            account=caller.account_name or "",
            record_url=self.record_url(caller.module, caller.record_id),
            history=self._history(call, caller), owner=owner, owner_is_you=mine,
            transfer_owner=bool(owner and owner.extension and not mine))

    @staticmethod
    def _restricted(_call, result, _for_user):
        return dict(module=result.caller.module)

    def may_view(self, user_id, module, record_id, about=""):
        """May the user view the record (crmsync/access.py)?  Kept per (``about``: the call or
        missed-call entry, user, record) for _ACCESS_TTL; True without a user or an ACL to ask."""
        if self.access is None or user_id is None:
            return True
        table = next((spec.table for spec in self.directory.rules.modules if spec.name == module), None)
        try:    # a failure is not kept: the next render asks again
            return table is not None and self._allowed.get((about, user_id, module, record_id), lambda: (
                self.access.can_view(user_id, module, table, record_id)))
        except _CRM_ERRORS as exc:
            log.warning("popup: cannot tell whether user %s may view %s %s, so not shown: %s",
                        user_id, module, record_id, exc)
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
    def _texts(kind, call, number, result, _):
        """(title, notify): plain text in the user's language (``_``), the browser sets them
        with textContent/Notification."""
        inbound = call.direction != "Outbound"
        cnam = _plain(call.caller_name)
        if kind == "known":
            caller = result.caller
            who = _plain(caller.name) or number
            company = _plain(caller.account_name)
            notify = "%s — %s%s (%s)" % (number, who, ", " + company if company else "", _(caller.module))
        elif kind == "restricted":
            who = number
            notify = "%s — %s" % (number, _("a record you cannot open (%s)") % _(result.caller.module))
        elif kind == "unidentified":
            who = None
            notify = _("Withheld number") + (" — " + _("caller ID: %s") % cnam if cnam else "")
        else:
            who = number
            notify = "%s — %s%s" % (number, _("unknown number"), " (" + _("caller ID: %s") % cnam + ")" if cnam else "")
        if who is None:
            title = _("Call from a withheld number") if inbound else _("Call to a withheld number")
        else:
            title = (_("Call from %s") if inbound else _("Call to %s")) % who
        return _plain(title)[:_NOTIFY_MAX], notify[:_NOTIFY_MAX]
