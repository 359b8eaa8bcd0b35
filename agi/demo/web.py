"""The browser side of `crmagi demo`: stand-in SuiteCRM pages carrying the popup script.

Each page prints exactly what the SuiteCRM hook prints for that user
(webpush.snippet, byte-identical to the PHP hook, checked by the tests), so
opening ``http://127.0.0.1:8088/`` shows the real popup, websocket and
token path.  The Ring buttons place simulated Asterisk calls.  Demo only: the
production push server serves no pages.
"""
import html
import json
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs

import gevent
from gevent.pywsgi import WSGIServer

from crmsync.demo import USERS
from webpush import auth, snippet

from agi.demo.simulator import SimulatedCall

log = logging.getLogger("crmagi.demo")
STATIC = Path(__file__).resolve().parent.parent.parent / "webpush" / "static"
RING_SECONDS = 25
CALLERS = [("+4930111111", "Anna O'Neil (contact of Sally)"), ("+4930555555", "Spreewald Logistik (account of Sally)"),
           ("+4930999999", "an unknown number (goes to reception, Chris)"), ("", "a withheld number (reception)")]
ANSWERED = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "20", "DIALEDTIME": "25", "HANGUPCAUSE": "16"}


class DemoWeb:
    def __init__(self, app, listen, ws_url):
        self.app, self.ws_url = app, ws_url
        self.server = WSGIServer(listen, self._route, log=None)

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop(timeout=1)

    def _route(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if "/custom/include/Crmagi/" in path and Path(path).name in ("popup.js", "popup.css"):
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            start_response("200 OK", [("Content-Type", kind + "; charset=utf-8")])
            return [(STATIC / Path(path).name).read_bytes()]
        if path == "/":
            return self._page(start_response, self._index())
        if path.startswith("/as/"):           # /as/<user id>/ stands for that user's SuiteCRM session
            user_id, _, rest = path[4:].partition("/")
            if rest == "index.php" and "entryPoint=crmagiToken" in environ.get("QUERY_STRING", ""):
                return self._fresh_token(start_response, user_id)
            if not rest:
                return self._page(start_response, self._crm_page(user_id))
        if path == "/ring" and environ.get("REQUEST_METHOD") == "POST":
            return self._ring(environ, start_response)
        if path.endswith("index.php"):
            return self._page(start_response, "<p>In a real SuiteCRM this link opens <code>%s</code>.</p>"
                              % html.escape(environ.get("QUERY_STRING", "")))
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    @staticmethod
    def _page(start_response, body):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [("<!doctype html><html><head><meta charset=utf-8><title>SuiteCRM (crmagi demo)</title></head>"
                 "<body style='font-family:sans-serif;margin:2em'>%s</body></html>" % body).encode("utf-8")]

    def _index(self):
        users = "".join('<li><a href="/as/%s/" target="_blank">%s %s</a> (extension %s)</li>'
                        % (uid, html.escape(first), html.escape(last), ext)
                        for uid, _, first, last, ext in USERS if ext)
        return ("<h1>crmagi demo</h1><p>1. Open the CRM as a user (each opens a tab):</p><ul>%s</ul>"
                "<p>2. Ring a call; the popup shows in the tab of the user whose phone rings:</p>%s"
                % (users, self._ring_buttons()))

    @staticmethod
    def _ring_buttons():
        return "".join('<form method="post" action="/ring"><input type="hidden" name="caller" value="%s">'
                       '<button>Call from %s</button></form>' % (html.escape(number), html.escape(label))
                       for number, label in CALLERS)

    def _crm_page(self, user_id):
        user = next((u for u in USERS if u[0] == user_id), None)
        if user is None:
            return "<p>No such demo user.</p>"
        web = self.app.config.webpush
        hook = snippet.render(web.secret, self.ws_url, web.token_seconds, "demo", user[0], user[1], time.time())
        return ("<h1>SuiteCRM &middot; %s %s</h1><p>This stands in for a SuiteCRM page: below is exactly what "
                "crmagi's logic hook prints into every page.</p>%s<pre style='white-space:pre-wrap;word-break:break-all'>%s</pre>%s"
                % (html.escape(user[2]), html.escape(user[3]), self._ring_buttons(), html.escape(hook), hook))

    def _fresh_token(self, start_response, user_id):
        """What the package's crmagiToken entry point answers a logged-in user."""
        web = self.app.config.webpush
        now = time.time()
        body = json.dumps({"token": auth.mint(web.secret, user_id, now, web.token_seconds),
                           "tokenExpires": int(now) + web.token_seconds})
        start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [body.encode()]

    def _ring(self, environ, start_response):
        size = min(int(environ.get("CONTENT_LENGTH") or 0), 1000)
        caller = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace")).get("caller", [""])[0]
        gevent.spawn(self._call, caller[:20])
        start_response("303 See Other", [("Location", environ.get("HTTP_REFERER") or "/")])
        return [b""]

    def _call(self, caller):
        call = SimulatedCall(self.app.agi.address, "incoming", number="4930123400", callerid=caller)
        first = call.start()
        log.info("demo call from %s: %s", caller or "(withheld)", first.variables.get("CRM_STATUS"))
        gevent.sleep(RING_SECONDS)
        call.finish(dict(ANSWERED, DIALEDPEERNUMBER=first.variables.get("CRM_OWNER_EXTEN") or "104"))
