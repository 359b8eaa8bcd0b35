"""Popups wired from the config: the push server, its service and the SuiteCRM content.

Popups run when ``[webpush] secret`` is set.  With an AMI listener they follow
the phones that ring; without one they go to the record's responsible user.
"""
import logging
from urllib.parse import urlsplit

from crmsync.access import RecordAccess
from crmsync.calls import CallStore
from crmsync.history import History
from crmsync.userlocale import UserLocales, site_of
from webpush.bus import make_bus
from webpush.content import PopupContent
from webpush.hub import Hub
from webpush.missedlist import MissedBoard
from webpush.popups import PopupBook
from webpush.recordings import Recordings
from webpush.recstore import LocalStore, RemoteStore
from webpush.server import PushServer
from webpush.service import PopupService
from webpush.transcode import Transcoder

log = logging.getLogger("crmagi.webpush")


def allowed_origins(config):
    """[webpush] allowed_origins, else the origin of [crm] site_url."""
    if config.webpush.allowed_origins:
        return config.webpush.allowed_origins
    parts = urlsplit(config.crm.site_url)
    return ("%s://%s" % (parts.scheme, parts.netloc),) if parts.scheme and parts.netloc else ()


def public_url(config):
    web = config.webpush
    if web.public_url:
        return web.public_url
    host, port = web.listen
    return "ws://%s:%d/ws" % (host, port)


def record_access(config, engine):
    """Who may view which CRM record, with the site's SecuritySuite settings."""
    return RecordAccess(engine, additive=config.crm.acl_additive,
                        user_role_precedence=config.crm.acl_user_role_precedence)


def build_recordings(config, engine):
    """The recordings served by the popup server, or None when no store is configured."""
    rec = config.recordings
    if rec.local_dir:
        store = LocalStore(rec.local_dir)
    elif rec.remote_url:
        store = RemoteStore(rec.remote_url, rec.remote_user, rec.remote_password, timeout=rec.fetch_timeout)
    else:
        return None
    transcoder = Transcoder(rec.cache_dir, int(rec.cache_mb * 1e6))
    return Recordings(config.webpush.secret, record_access(config, engine), store, transcoder, rec.monitor_dir,
                      url_seconds=rec.url_seconds)


class Publisher:
    """A FastAGI worker other than 0: publishes its calls' popup events on Redis, serves nothing."""

    def __init__(self, config):
        self.service = PopupService(None, None, make_bus(config.webpush.redis_url), None, CallStore.call_id_for,
                                    config.agi.system_name, ami_driven=bool(config.ami.host))
        self.on_agi = self.service.on_agi


class Popups:
    def __init__(self, config, directory, engine, transfer=None, dial=None, missed=None):
        """``missed``: crmsync/missed.py MissedCalls, whose open entries the tabs list."""
        web = config.webpush
        self.hub = Hub()
        self.book = PopupBook(self.hub, request_render=None, pending_seconds=web.pending_seconds)
        self.history = History(engine, limit=web.history_limit)
        self.locales = UserLocales(engine, site_of(config.crm))
        self.content = content = PopupContent(directory, self.history, site_url=config.crm.site_url,
                                              anonymous_account=config.lookup.anonymous_account,
                                              history_limit=web.history_limit, locales=self.locales,
                                              site_locale=self.locales.site, access=record_access(config, engine))
        self.service = PopupService(self.book, directory, make_bus(web.redis_url), content,
                                    CallStore.call_id_for, config.agi.system_name,
                                    ami_driven=bool(config.ami.host), transfer=transfer, dial=dial,
                                    fallback_extensions=web.fallback_extensions,
                                    missed=MissedBoard(self.hub, missed.open_for, content) if missed else None)
        origins = allowed_origins(config)
        if not origins:
            log.warning("popups: [webpush] allowed_origins is empty and [crm] site_url has no origin: "
                        "every browser will be refused (see `crmagi check`)")
        self.server = PushServer(web.listen, web.secret, origins, self.service, self.hub,
                                 directory, token_seconds=web.token_seconds, max_sockets=web.max_sockets,
                                 recordings=build_recordings(config, engine), locales=self.locales,
                                 site_language=config.crm.default_language)

    def warm_up(self):
        """Reflect the history tables and compile the templates before the first ring, not
        during it (the first popup took 90-300 ms more without this)."""
        self.history.recent("Contacts", "crmagi-warm-up")
        self.content.env.get_template("popup.html.j2")

    def start(self, listen=True):
        """``listen`` False: a tenant's popups, served through agi/tenants/server.py's listener."""
        self.service.start()
        self.listening = listen
        if listen:
            self.server.start()
        return self

    def stop(self):
        if getattr(self, "listening", True):
            self.server.stop()
        self.service.stop()
