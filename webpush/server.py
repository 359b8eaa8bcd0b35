"""The popup websocket server: the only module that knows gevent-websocket.

One URL, ``/ws``.  A socket is admitted only after its first message carries a
valid token (webpush/auth.py) from an allowed Origin; until then it is in no
room and hears nothing.  A refused socket is told why, then closed with 4401
(token) or 4403 (origin), so the browser's console says what to fix.
``/health`` answers JSON counters for monitoring; ``/recordings/<signed>`` serves call
recordings (webpush/recordings_http.py).
"""
import binascii
import json
import logging
import struct
import time
import uuid
from urllib.parse import urlsplit

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket

from crmlocale import catalogues
from crmlocale.catalogues import N_, phrase

from . import auth, messages, recordings_http
from .hub import Tab, ext_room, user_room

log = logging.getLogger("crmagi.webpush")
HANDSHAKE_TIMEOUT = 10.0
HELLO_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0        # the script pings every 25 s; a silent socket is a dead one
MAX_JUNK = 10
MAX_TABS_PER_USER = 30
RATE, BURST = 5.0, 40       # messages a tab may send per second, and in one burst
MAX_SESSION = 12 * 3600     # seconds a chain of renewed tokens may last without a page load


class _BoundedWebSocket(WebSocket):
    """gevent-websocket reads frames of any length, and messages of any number of frames, into
    memory, without yielding while bytes keep coming: cap both, and yield after each frame."""

    __slots__ = ()
    PARTIAL = "crmagi.partial"         # bytes of the message being assembled (kept in environ)

    def read_frame(self):
        if self.closed:
            raise WebSocketError("closed")
        header = Header.decode_header(self.stream)
        gevent.sleep(0)                # a peer that never stops sending must not starve the others
        self._count(header)
        if header.flags:
            raise ProtocolError
        raw_read = self.raw_read
        if raw_read is None:        # close() (Tab.close: a stalled tab) ran while this read waited
            raise WebSocketError("closed")
        payload = raw_read(header.length) if header.length else b""
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = header.unmask_payload(payload)
        return header, payload

    def _count(self, header):
        if header.length > messages.MAX_MESSAGE:
            raise ProtocolError("frame of %d bytes refused" % header.length)
        if header.opcode not in (self.OPCODE_TEXT, self.OPCODE_BINARY, self.OPCODE_CONTINUATION):
            return
        so_far = self.environ.get(self.PARTIAL, 0) if header.opcode == self.OPCODE_CONTINUATION else 0
        total = so_far + header.length
        if total > messages.MAX_MESSAGE:
            raise ProtocolError("message of more than %d bytes refused" % messages.MAX_MESSAGE)
        self.environ[self.PARTIAL] = 0 if header.fin else total

    def close(self, code=1000, message=b""):
        # 0.10.1 sends str(message) as the whole close payload and drops ``code``, so
        # browsers saw a garbage status: send the code, then the reason, ourselves.
        if self.closed:
            return
        try:
            # gevent-websocket answers an empty close frame (a browser's ws.close()) with message=None
            self.send_frame(struct.pack("!H", code) + (message or b"")[:120], self.OPCODE_CLOSE)
        except WebSocketError:
            pass
        finally:
            self.closed = True
            self.stream = self.raw_write = self.raw_read = None


class _Handler(WebSocketHandler):
    # pywsgi gives every socket an 8 KB read buffer; a tab sends a few hundred bytes a
    # minute, so 10,000 idle tabs would hold 80 MB of empty buffers.
    READ_BUFFER = 1024

    def __init__(self, sock, address, server, rfile=None):
        sock.settimeout(HANDSHAKE_TIMEOUT)      # a half-sent request is not kept for ever
        super().__init__(sock, address, server, rfile=rfile or sock.makefile("rb", self.READ_BUFFER))

    def upgrade_websocket(self):
        # gevent-websocket 0.10.1 answers a bad handshake with str bodies, which pywsgi cannot
        # send: the status went out, then a TypeError traceback instead of the body (junk run).
        result = super().upgrade_websocket()
        if isinstance(result, list):
            return [item.encode("utf-8") if isinstance(item, str) else item for item in result]
        return result

    def read_request(self, raw_requestline):
        # pywsgi indexes the version's second number: "HTTP/1" raised IndexError, which it
        # prints as a traceback; ValueError is its quiet "400 Bad Request".
        try:
            return super().read_request(raw_requestline)
        except IndexError:
            raise ValueError("bad HTTP version in %r" % raw_requestline[:80]) from None

    def upgrade_connection(self):
        try:
            result = super().upgrade_connection()
        except binascii.Error:      # gevent-websocket base64-decodes Sec-WebSocket-Key unguarded
            self.start_response("400 Bad Request", [])
            return [b"Sec-WebSocket-Key is not base64"]
        if getattr(self, "websocket", None) is not None:
            self.websocket.__class__ = _BoundedWebSocket
            self.socket.settimeout(None)        # from here the read loop keeps its own timeouts
        return result

    def log_request(self):          # one line per socket at INFO would flood a call centre's log
        log.debug("%s", self.format_request())


def spend(holder, now, rate, burst):
    """Token bucket kept on ``holder.budget`` / ``holder.budget_at`` (a tab, a plugin
    connection): takes one message's token; False once the holder sends faster than
    ``rate`` a second beyond a burst of ``burst``."""
    holder.budget = min(burst, holder.budget + (now - holder.budget_at) * rate) - 1
    holder.budget_at = now
    return holder.budget >= 0


def make_wsgi_server(listen, app, max_sockets):
    """The popup listener (gevent-websocket with crmagi's bounded frames and quiet junk
    handling) for ``app``: one PushServer's, or agi/tenants/server.py's dispatch."""
    return WSGIServer(listen, app, handler_class=_Handler, log=None, error_log=log, spawn=Pool(max_sockets))


class _Transport:
    def __init__(self, ws):
        self.ws = ws

    def send(self, text):
        self.ws.send(text)

    def close(self, code=1000, reason=""):
        self.ws.close(code, reason.encode("utf-8"))


class PushServer:
    def __init__(self, listen, secret, allowed_origins, service, hub, directory, token_seconds=600,
                 max_sockets=20000, clock=time.time, recordings=None, locales=None, site_language="en_us"):
        self.listen = listen
        self.secret = secret
        self.allowed_origins = tuple(allowed_origins)
        self.service = service
        self.hub = hub
        self.directory = directory
        self.token_seconds = token_seconds
        self.clock = clock
        self.recordings = recordings          # webpush.recordings.Recordings, or None (no store set)
        self.locales = locales                # crmsync.userlocale.UserLocales: each user's language
        self.site_language = catalogues.language(site_language)
        self.stats = {"accepted": 0, "refused": 0}
        self.plugin = None          # agi/plugin/server.py PluginServer, set by the App
        self.server = make_wsgi_server(listen, self._app, max_sockets)

    @property
    def address(self):
        return self.server.address

    def start(self):
        self.server.start()
        log.info("popup websocket server on %s:%d", *self.server.address[:2])
        return self

    def stop(self, timeout=2.0):
        self.server.stop(timeout=timeout)

    # -- WSGI ------------------------------------------------------------------
    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        ws = environ.get("wsgi.websocket")
        if path == "/ws" and ws is not None:
            self._serve_socket(ws, environ.get("HTTP_ORIGIN", ""))
            return []
        if path == "/plugin" and ws is not None and self.plugin is not None:
            # API keys belong to servers, never to web pages: a browser (it always sends the
            # page's Origin) is refused, so a key pasted into a page's script is worth nothing.
            # Clients such as websocket-client send this server's own origin, which is fine.
            origin = environ.get("HTTP_ORIGIN", "")
            if origin and urlsplit(origin).netloc != environ.get("HTTP_HOST", ""):
                self.plugin.refuse(ws, "browsers may not use the plugin API (Origin %s)" % origin[:80])
            else:
                self.plugin.serve(ws)
            return []
        if path.startswith("/recordings/") and self.recordings is not None:
            return recordings_http.serve(self.recordings, environ, start_response)
        if path == "/health":
            body = json.dumps({"tabs": self.hub.count(), **self.stats, **self.service.book.stats}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"crmagi popups: connect a websocket to /ws\n"]

    # -- one socket ------------------------------------------------------------
    def _serve_socket(self, ws, origin):
        transport = _Transport(ws)
        if not auth.origin_allowed(origin, self.allowed_origins):
            return self._refuse(transport, 4403, "origin %s is not allowed ([webpush] allowed_origins)"
                                % (origin or "(none)"))
        try:
            hello = self._hello(ws)
            claims = auth.verify(self.secret, hello.get("token"), self.clock())
            # popup.js also sends the page's user: a token minted for someone else is refused,
            # not admitted into that other user's room (where it could take their popups).
            if hello.get("user") not in (None, claims.user_id):
                raise auth.TokenError(N_("token is for another user"))
        except (messages.BadMessage, auth.TokenError) as exc:
            return self._refuse(transport, 4401, str(exc))
        tab = Tab(transport, claims.user_id, hello.get("tab") or uuid.uuid4().hex,
                  hello.get("visible", True), hello.get("focused", False), now=self.clock())
        del hello                 # this greenlet lives as long as the tab: keep its frame small
        tab.language = self._language(tab.user_id)
        refusal = self._admit(tab, claims)
        if refusal:
            return self._refuse(transport, 4403, refusal, tab.language)
        try:
            self._read_loop(ws, tab)
        finally:
            tab.close()           # leaves the hub once (Tab.close calls on_close)

    def _hello(self, ws):
        with gevent.Timeout(HELLO_TIMEOUT, messages.BadMessage("no hello within %ds" % HELLO_TIMEOUT)):
            message = messages.decode(self._receive(ws))
        if message["type"] != "hello":
            raise messages.BadMessage("the first message must be hello")
        return message

    @staticmethod
    def _receive(ws):
        try:
            return ws.receive()
        except (WebSocketError, ProtocolError, UnicodeError) as exc:
            raise messages.BadMessage("bad frame: %s" % exc) from None

    def _language(self, user_id):
        """The catalogue of the user's SuiteCRM language (their preference, else the site's)."""
        if self.locales is None:
            return self.site_language
        return catalogues.language(self.locales.get(user_id).language)

    def _refuse(self, transport, code, reason, language=None):
        """``reason``: English, for the console and the script's logic; the page shows ``text``
        in the user's language when the token named the user, else the site's."""
        self.stats["refused"] += 1
        log.info("popup socket refused: %s", reason)
        language = language or self.site_language
        said = reason if isinstance(reason, catalogues.Phrase) else phrase(str(reason))   # token errors are msgids
        text = language.say(phrase("Call popups stopped (%s). Reload the page to start them again.", said))
        try:
            transport.send(messages.encode(messages.refused(str(reason), text)))
            transport.close(code, str(reason)[:100])
        except Exception:
            pass

    def _admit(self, tab, claims):
        """Room membership for an active CRM user; None (refused) with the reason otherwise."""
        known, user = self._user(tab.user_id)
        if known and user is None:
            return phrase("user %s is not an active CRM user", tab.user_id)
        if len(self.hub.members(user_room(tab.user_id))) >= MAX_TABS_PER_USER:
            return phrase("more than %s tabs open for this user", MAX_TABS_PER_USER)
        self.stats["accepted"] += 1
        rooms = [user_room(tab.user_id)]
        if user is not None and user.extension:
            rooms.append(ext_room(user.extension))
        self.hub.join(tab, *rooms)
        tab.on_close = lambda: self._gone(tab)
        tab.token_expires, tab.session_start = claims.expires_at, claims.session_start
        tab.budget, tab.budget_at = BURST, self.clock()
        # Sent from the tab's own greenlet: no sender greenlet to spawn for it.
        tab.transport.send(messages.encode({"type": "welcome", "user": tab.user_id,
                                            "token_expires": claims.expires_at, "lang": tab.language.code,
                                            "texts": tab.language.js}))
        self.service.tab_joined(tab)
        return None

    def _gone(self, tab):
        self.hub.leave(tab)
        self.service.tab_left(tab)

    def _user(self, user_id):
        """(the CRM answered, the active user or None).  A CRM that is down keeps tabs in
        (grace): popups need the CRM anyway, and refusing would log everyone out."""
        try:
            return True, self.directory.user(user_id)
        except Exception as exc:
            log.warning("cannot check user %s in the CRM: %s", user_id, exc)
            return False, None

    def _read_loop(self, ws, tab):
        junk = 0
        while not tab.closed:
            try:
                with gevent.Timeout(IDLE_TIMEOUT, messages.BadMessage("idle")):
                    message = messages.decode(self._receive(ws))
            except messages.BadMessage as exc:
                if str(exc) in ("closed", "idle") or str(exc).startswith("bad frame"):
                    return
                junk += 1
                tab.send(messages.encode({"type": "error", "reason": str(exc)}))
                if junk >= MAX_JUNK:
                    return
                continue
            if not self._spend(tab):    # said from this greenlet: close() drops what is queued
                self._refuse(tab.transport, 4408, phrase("more than %s messages a second", int(RATE)), tab.language)
                return
            self._handle(tab, message)

    def _spend(self, tab):
        """A tab sends a few messages a minute; a flood is not a browser."""
        return spend(tab, self.clock(), RATE, BURST)

    def _handle(self, tab, message):
        kind = message["type"]
        if kind == "state":
            tab.set_state(message.get("visible", tab.visible), message.get("focused", tab.focused), self.clock())
            self.service.tab_changed(tab)
        elif kind == "dismiss" and message.get("call"):
            self.service.dismiss(tab, message["call"])
        elif kind == "transfer" and message.get("call") and message.get("exten"):
            self.service.transfer(tab, message["call"], message["exten"])
        elif kind == "dial":
            self.service.dial(tab, message)
        elif kind == "recordings" and self.recordings is not None:
            items = self.recordings.answer(tab.user_id, message.get("calls") or [])
            tab.send(messages.encode(messages.recordings(items)))
        elif kind == "ping":
            tab.send(messages.encode({"type": "pong"}))
            self._renew_token(tab)

    def _renew_token(self, tab):
        """Keep a connected tab's token fresh, so it can reconnect after a crmagi restart; but
        only for an active user, and not beyond MAX_SESSION since the page minted the first."""
        now = self.clock()
        if tab.token_expires - now >= self.token_seconds / 2 or now - tab.session_start > MAX_SESSION:
            return
        known, user = self._user(tab.user_id)
        if known and user is None:
            self._refuse(tab.transport, 4403, phrase("user %s is not an active CRM user", tab.user_id), tab.language)
            tab.close()
            return
        token = auth.mint(self.secret, tab.user_id, now, self.token_seconds, session_start=tab.session_start)
        tab.token_expires = int(now) + self.token_seconds
        tab.send(messages.encode({"type": "token", "token": token}))
