"""The call popup's HTML fragment, title and notification line, rendered server side.

Three forms (``kind``): ``known`` (the lookup found a record), ``unknown`` (no
match, or the CRM did not answer in time) and ``unidentified`` (withheld number).
Everything from the network or the CRM (number, CNAM, names, subjects) is
untrusted: the Jinja environment autoescapes every value, and the fragment has
no inline script or event handler (popup.js binds by ``data-crmagi-*``
attributes, so a strict Content-Security-Policy holds).

The history and the phone book are extras: when the CRM cannot give them the
popup still shows, with a short note instead.
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


class PopupContent:
    def __init__(self, directory, history, site_url="", anonymous_account="", history_limit=10, locales=None,
                 site_locale=UserLocale()):
        self.directory = directory
        self.history = history
        self.site_url = site_url or ""
        self.anonymous_account = anonymous_account or ""
        self.history_limit = history_limit
        self.locales = locales               # crmsync.userlocale.UserLocales, or None: the site's for all
        self.site_locale = site_locale
        self.env = environment()
        self._envs = {catalogues.SOURCE: self.env}    # language code -> Environment
        self._recent = {}     # (call id, module, record id) -> (monotonic time, items)

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
        locale = self.locale_of(for_user.id if for_user else None)
        language = catalogues.language(locale.language)
        number = _display_number(call.number, result.e164 if result else None) or language.gettext("withheld")
        context = dict(
            kind=kind, call_id=call.call_id, crm_url=self.url, number=number, inbound=call.direction != "Outbound",
            when=_when(locale),
            dial_number=call.number if kind != "unidentified" else "",
            queue=call.queue or "", cnam=_plain(call.caller_name), lookup_failed=result is None,
            edit_call_url=self._index(module="Calls", action="EditView", record=call.call_id),
            staff=self._staff(), **getattr(self, "_" + kind)(call, result, for_user))
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
        now, key = time.monotonic(), (call.call_id, caller.module, caller.record_id)
        cached = self._recent.get(key)
        if cached and now - cached[0] < _HISTORY_TTL:
            return cached[1]
        try:
            items = self.history.recent(caller.module, caller.record_id, limit=self.history_limit,
                                        exclude=(call.call_id,))
        except _CRM_ERRORS as exc:
            log.warning("popup of call %s: history unavailable: %s", call.call_id, exc)
            return None
        if len(self._recent) >= _HISTORY_KEEP:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < _HISTORY_TTL}
        self._recent[key] = (now, items)
        return items

    def _staff(self):
        try:
            return self.directory.staff()
        except _CRM_ERRORS as exc:
            log.warning("popup: phone book unavailable: %s", exc)
            return None

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
