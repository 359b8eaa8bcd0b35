"""The /plugin websocket: one greenlet per connection, keys, scopes, commands, revocation.

A connection is admitted by its first message, ``hello`` with an API key of the tenant
(crmsync/apikeys.py; the scrypt check runs in a thread, so 50 ms of hashing never
stalls the event loop).  Each later message needs its scope (protocol.SCOPE_OF), is
rate-limited like a popup tab, and is answered on the same socket.  Every 0.5 s the
keys of open connections are checked against the database: a key revoked on any box
closes its sockets within a second.  Commands from crmagi (a popup's transfer of a
plugin call) go to the connection that reported the call, or that owns the extension.
"""
import itertools
import logging
import time

import gevent
from gevent.event import AsyncResult
from geventwebsocket.exceptions import ProtocolError, WebSocketError

from crmlocale.catalogues import phrase
from crmsync.apikeys import ApiKeyError, check_secret
from webpush.server import spend

from agi.plugin import protocol
from agi.plugin.calls import PluginCalls, linkedid_of

log = logging.getLogger("crmagi.plugin")
HELLO_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
REVOCATION_CHECK = 0.5
RATE, BURST = 200.0, 400     # a PBX sends several events per call: far more than a browser tab
MAX_JUNK = 20
COMMAND_TIMEOUT = 10.0


class Connection:
    def __init__(self, ws, key, extensions):
        self.ws, self.key = ws, key
        self.extensions = set(extensions)
        self.pending = {}                    # command id -> AsyncResult
        self.budget, self.budget_at = BURST, time.monotonic()
        self.closed = False

    def send(self, message):
        if not self.closed:
            self.ws.send(protocol.encode(message))

    def close(self, code, reason):
        if self.closed:
            return
        try:
            self.send(protocol.refused(reason))
            self.ws.close(code, reason.encode("utf-8")[:100])
        except (WebSocketError, OSError):
            pass
        self.closed = True
        for result in self.pending.values():
            result.set((False, "the plugin connection closed"))


class PluginServer:
    """Mounted by the popup server at /plugin (webpush/server.py)."""

    def __init__(self, tenant, keys, flow, effects, clock=time.monotonic):
        self.tenant, self.keys, self.flow = tenant, keys, flow
        self.calls = PluginCalls(flow, effects, clock=clock)
        self.connections = []
        self.call_owner = {}                 # linkedid -> Connection that reported it
        self.ids = itertools.count(1)
        self.stats = {"accepted": 0, "refused": 0, "messages": 0, "errors": 0}
        self._watcher = None

    def start(self):
        try:
            self.keys.ensure_table()
        except Exception as exc:     # the CRM may be down at boot; verify() fails until it is back
            log.warning("cannot prepare crmagi_api_keys yet: %s", exc)
        self._watcher = gevent.spawn(self._watch_revocations)
        return self

    def stop(self):
        if self._watcher is not None:
            self._watcher.kill()
        for connection in list(self.connections):
            connection.close(1001, "crmagi is stopping")

    # -- one connection --------------------------------------------------------
    def refuse(self, ws, reason, code=4403):
        self.stats["refused"] += 1
        log.info("plugin connection refused: %s", reason)
        Connection(ws, None, ()).close(code, reason)

    def serve(self, ws):
        try:
            connection = self._admit(ws)
        except (protocol.BadMessage, ApiKeyError) as exc:
            return self.refuse(ws, str(exc), 4401)
        self.connections.append(connection)
        try:
            self._read_loop(connection)
        finally:
            connection.closed = True
            self.connections.remove(connection)
            for linkedid in [k for k, v in self.call_owner.items() if v is connection]:
                del self.call_owner[linkedid]

    def _admit(self, ws):
        with gevent.Timeout(HELLO_TIMEOUT, protocol.BadMessage("no hello within %ds" % HELLO_TIMEOUT)):
            hello = protocol.decode(_receive(ws))
        if hello["type"] != "hello":
            raise protocol.BadMessage("the first message must be hello")
        key = self.keys.verify(hello["key"], check=_check_in_thread)
        connection = Connection(ws, key, hello.get("extensions", ()))
        self.stats["accepted"] += 1
        connection.send(protocol.welcome(self.tenant, key.scopes))
        log.info("plugin connection with key %s (%s) admitted", key.key_id, key.label)
        return connection

    def _read_loop(self, connection):
        junk = 0
        while not connection.closed:
            try:
                with gevent.Timeout(IDLE_TIMEOUT, protocol.BadMessage("idle")):
                    message = protocol.decode(_receive(connection.ws))
                self._spend(connection)
                self._dispatch(connection, message)
            except protocol.BadMessage as exc:
                if str(exc) in ("closed", "idle"):
                    return
                if str(exc).startswith("rate"):
                    connection.close(4408, str(exc))
                    return
                junk += 1
                self.stats["errors"] += 1
                connection.send(protocol.error(str(exc), _message_id(exc)))
                if junk >= MAX_JUNK:
                    connection.close(4400, "too many bad messages")
                    return

    @staticmethod
    def _spend(connection):
        if not spend(connection, time.monotonic(), RATE, BURST):
            raise protocol.BadMessage("rate: more than %d messages a second" % RATE)

    def _dispatch(self, connection, message):
        kind = message["type"]
        scope = protocol.SCOPE_OF.get(kind)
        if scope and scope not in connection.key.scopes:
            error = protocol.BadMessage("%s needs the scope %r, which this key does not have" % (kind, scope))
            error.message_id = message.get("id")
            raise error
        self.stats["messages"] += 1
        if kind == "ping":
            connection.send({"type": "pong"})
        elif kind == "hello":
            raise protocol.BadMessage("already welcomed")
        elif kind == "lookup":
            connection.send(protocol.lookup_result(message["id"], self._lookup(message["number"])))
        elif kind == "call":
            self._call_event(connection, message)
        elif kind == "command_result":
            pending = connection.pending.pop(message["id"], None)
            if pending is not None:
                pending.set((message["ok"], message.get("reason") or ("done" if message["ok"] else "refused")))

    def _lookup(self, number):
        flow = self.flow
        job = flow.start_lookup(flow.directory.lookup, number)
        return flow.wait_lookup(job, flow.clock() + flow.timeout)

    def _call_event(self, connection, message):
        call_id = self.calls.handle(message)
        self.call_owner[linkedid_of(message["call"])] = connection
        if message.get("extension"):
            connection.extensions.add(message["extension"])
        connection.send(protocol.ack(message["call"], message["event"], call_id))

    # -- commands from crmagi --------------------------------------------------
    def transfer(self, linkedid, extension):
        """(ok, text) of a popup's transfer of a plugin call, as agi/ami/live.py Transfers answers."""
        connection = self.call_owner.get(linkedid)
        if connection is None or connection.closed:
            return False, phrase("the PBX of this call is not connected")
        return self._command(connection, "transfer", call=linkedid[2:], extension=extension)

    def owns(self, extension):
        return any(extension in c.extensions and "originate" in c.key.scopes and not c.closed
                   for c in self.connections)

    def originate(self, extension, number, click=None, callerid_name=None, timeout=30):
        """(ok, text) of a click-to-call: the PBX owning ``extension`` rings it, then dials
        ``number``; it answers once the user's phone answered (or did not)."""
        owners = [c for c in self.connections if extension in c.extensions and "originate" in c.key.scopes]
        if not owners:
            return False, phrase("no connected PBX owns extension %s", extension)
        return self._command(owners[-1], "originate", wait=timeout + COMMAND_TIMEOUT, extension=extension,
                             number=number, click=click, callerid_name=callerid_name, timeout=timeout)

    def _command(self, connection, action, wait=COMMAND_TIMEOUT, **fields):
        command_id = "c%d" % next(self.ids)
        result = connection.pending[command_id] = AsyncResult()
        connection.send(protocol.command(command_id, action, **fields))
        try:
            return result.get(timeout=wait)
        except gevent.Timeout:
            return False, phrase("the PBX did not answer within %s s", int(wait))
        finally:
            connection.pending.pop(command_id, None)

    # -- revocation --------------------------------------------------------------
    def _watch_revocations(self):
        while True:
            gevent.sleep(REVOCATION_CHECK)
            open_keys = {c.key.key_id for c in self.connections if not c.closed}
            if not open_keys:
                continue
            try:
                revoked = set(self.keys.revoked_among(sorted(open_keys)))
            except Exception as exc:    # the CRM is down: keep the connections (grace), say so once
                log.debug("cannot check revoked keys: %s", exc)
                continue
            for connection in [c for c in self.connections if c.key.key_id in revoked]:
                log.info("plugin key %s revoked: closing its connection", connection.key.key_id)
                connection.close(4401, "key revoked")


def _receive(ws):
    try:
        return ws.receive()
    except (WebSocketError, ProtocolError, UnicodeError) as exc:
        raise protocol.BadMessage("closed") from exc


def _message_id(exc):
    return getattr(exc, "message_id", None)


def _check_in_thread(secret, stored):
    """scrypt releases the GIL: run it in gevent's thread pool, not on the event loop."""
    return gevent.get_hub().threadpool.apply(check_secret, (secret, stored))
