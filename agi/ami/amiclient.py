"""gevent AMI client: the only code touching the AMI socket.

One connection per Asterisk.  A reader greenlet splits the stream into
messages; responses resolve the AsyncResult of their ActionID (list actions
such as CoreShowChannels collect their events up to the ``…Complete`` event);
every event goes to ``on_<EventName>`` of the handler, found once.  When the
socket drops (Asterisk restart: ``Event: Shutdown``, then EOF, then about 0.3 s
of refused connects) the client reconnects with capped, jittered exponential
back-off, logs in again and calls ``handler.on_connected(client)`` so the
caller can resync state.  Pending actions fail fast with AmiDisconnected.
"""
import itertools
import logging
import random

import gevent
from gevent import socket
from gevent.event import AsyncResult, Event

from agi.ami import amiproto
from agi.errors import AmiActionFailed, AmiDisconnected, AmiError, AmiProtocolError

log = logging.getLogger("crmagi.ami")


class Backoff:
    """Capped exponential back-off with full jitter; ``reset`` after a success."""

    def __init__(self, first=0.05, cap=10.0, rng=random.random):
        self.first, self.cap, self.rng, self.attempt = first, cap, rng, 0

    def next(self):
        ceiling = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rng() * ceiling / 2

    def reset(self):
        self.attempt = 0


class _Pending:
    def __init__(self, collect):
        self.result = AsyncResult()
        self.collect = collect       # list actions: events carrying our ActionID
        self.response = None
        self.events = []


class AmiClient:
    def __init__(self, host, port, username, secret, handler=None, *, events="on",
                 ping_interval=20.0, timeout=5.0, backoff=None, name="ami"):
        self.address = (host, port)
        self.username, self.secret, self.events = username, secret, events
        self.handler = handler
        self.ping_interval, self.timeout = ping_interval, timeout
        self.backoff = backoff or Backoff()
        self.name = name
        self.connected = Event()
        self.stats = {"connects": 0, "disconnects": 0, "events": 0, "junk": 0}
        self._ids = itertools.count(1)
        self._pending = {}
        self._sock = None
        self._received = 0              # bytes read: a busy link is told from a dead one by it
        self._main = None
        self._handlers = _discover(handler)

    # -- lifecycle -------------------------------------------------------
    def start(self):
        self._main = gevent.spawn(self._run)
        return self

    def stop(self):
        if self._main is not None:
            self._main.kill(block=True, timeout=2)
        self._close(AmiDisconnected("client stopped"))

    def _run(self):
        while True:
            try:
                self._session()
            except (OSError, AmiError) as exc:
                self._close(AmiDisconnected(str(exc)))
                delay = self.backoff.next()
                log.warning("%s %s:%d: %s; reconnecting in %.2fs", self.name, self.address[0],
                            self.address[1], exc, delay)
                gevent.sleep(delay)

    def _session(self):
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.settimeout(None)
        self._sock = sock
        buf = self._read_banner(sock)
        reader = gevent.spawn(self._reader, sock, buf)
        try:
            self.action("Login", [("Username", self.username), ("Secret", self.secret),
                                  ("Events", self.events)])
            self.stats["connects"] += 1
            self.backoff.reset()
            self.connected.set()
            log.info("%s logged in to %s:%d", self.name, *self.address)
            if "on_connected" in self._handlers:
                gevent.spawn(self._handlers["on_connected"], self)
            self._keepalive(reader)
        finally:
            reader.kill(block=False)

    def _read_banner(self, sock):
        buf = b""
        with gevent.Timeout(self.timeout, AmiError("no AMI banner within %.1fs" % self.timeout)):
            while True:
                banner, rest = amiproto.split_banner(buf)
                if banner:
                    return rest
                data = sock.recv(4096)
                if not data:
                    raise AmiDisconnected("closed before the banner")
                buf += data

    def _keepalive(self, reader):
        """Ping while the reader lives; a dead reader or an unanswered ping ends the session."""
        while not reader.dead:
            reader.join(timeout=self.ping_interval)
            if reader.dead:
                break
            self._ping()
        exc = reader.value
        raise exc if isinstance(exc, (OSError, AmiError)) else AmiDisconnected("connection closed: %s" % exc)

    def _ping(self):
        """An unanswered Ping ends the session only when nothing at all came meanwhile: under
        load its answer waits behind events the reader has not reached yet, and a reconnect
        would lose every event until the resync (seen at 200 calls/s)."""
        received = self._received
        try:
            self.action("Ping")
        except AmiDisconnected:
            raise
        except AmiError as exc:
            if self._received == received:
                raise
            log.warning("%s: %s, but events keep coming: the link is busy, not dead", self.name, exc)

    def _close(self, error):
        self.connected.clear()
        if self._sock is not None:
            self.stats["disconnects"] += 1
            try:
                self._sock.close()
            finally:
                self._sock = None
        pending, self._pending = self._pending, {}
        for item in pending.values():
            item.result.set_exception(error)

    # -- reading -------------------------------------------------------
    def _reader(self, sock, buf):
        """Returns (never raises) the reason the connection ended: a greenlet that dies
        with an exception gets a traceback printed by gevent's hub."""
        try:
            self._read_loop(sock, buf)
        except Exception as exc:      # noqa: BLE001 - handed to _keepalive as a value
            return exc

    def _read_loop(self, sock, buf):
        while True:
            frames, buf = amiproto.split_frames(buf)     # a frame over the size limit ends the link
            for frame in frames:
                try:
                    message = amiproto.parse_frame(frame)
                except AmiProtocolError as exc:
                    # The frames around it are whole (the terminator delimits them): skip one bad
                    # frame rather than drop the link and resync every call for it.
                    self.stats["junk"] += 1
                    log.warning("%s: skipped a frame that is not AMI: %s", self.name, exc)
                    continue
                self._dispatch(amiproto.unescape(message))
            # gevent's recv returns without a switch when data waits, which under load it
            # always does: without this the AGI requests and the effects of this process
            # starve behind the reader (the effects queue overflowed at 200 calls/s).
            gevent.sleep(0)
            data = sock.recv(65536)
            if not data:
                raise AmiDisconnected("Asterisk closed the connection")
            self._received += len(data)
            buf += data

    def _dispatch(self, message):
        pending = self._pending.get(message.action_id) if message.action_id else None
        if message.event is None:
            if pending is not None:
                pending.response = message
                if not pending.collect or message.response != "Success":
                    self._resolve(message.action_id)
            return
        self.stats["events"] += 1
        if pending is not None and pending.collect:
            if message.get("EventList") == "Complete" or message.event.endswith("Complete"):
                self._resolve(message.action_id)
            else:
                pending.events.append(message)
            return
        handler = self._handlers.get("on_" + message.event) or self._handlers.get("on_event")
        if handler is not None:
            try:
                handler(message)
            except Exception:
                log.exception("%s: handler for %s failed", self.name, message.event)

    def _resolve(self, action_id):
        item = self._pending.pop(action_id)
        response = item.response
        if response is not None and response.response in ("Error", "Failure"):
            item.result.set_exception(AmiActionFailed(response.get("Message", "action failed")))
        else:
            item.result.set((response, item.events))

    # -- actions -------------------------------------------------------
    def filter(self, patterns, timeout=None):
        """Server-side whitelist filters for this session (Asterisk's Filter action):
        only events matching one of the regexes are sent.  An Asterisk that refuses
        (e.g. without the originate write class) just keeps sending everything."""
        late = None
        for pattern in patterns:
            try:
                self.action("Filter", [("Operation", "Add"), ("Filter", pattern)], timeout=timeout)
            except AmiActionFailed as exc:
                log.warning("%s: Filter refused (%s); receiving every event", self.name, exc)
                return False
            except AmiDisconnected:
                raise
            except AmiError as exc:
                # Not answered in time, but Asterisk may still apply it: send the others too,
                # since a part of the whitelist alone would hide the events the rest lets in.
                late = exc
        if late is not None:
            raise late
        return True

    def new_action_id(self):
        """An ActionID of this client, for an action whose later events must be matched by it
        (OriginateResponse) before its response arrives."""
        return "%s-%d" % (self.name, next(self._ids))

    def action(self, name, headers=(), *, collect=False, timeout=None, action_id=None):
        """Send an action and wait for its response (and, with ``collect``, its event list)."""
        if self._sock is None:
            raise AmiDisconnected("not connected")
        action_id = action_id or self.new_action_id()
        pending = self._pending[action_id] = _Pending(collect)
        try:
            self._sock.sendall(amiproto.format_action(name, action_id, headers))
        except OSError as exc:
            self._pending.pop(action_id, None)
            raise AmiDisconnected(str(exc)) from None
        try:
            response, events = pending.result.get(timeout=timeout or self.timeout)
        except gevent.Timeout:
            self._pending.pop(action_id, None)
            raise AmiError("no response to %s within %.1fs" % (name, timeout or self.timeout)) from None
        return (response, events) if collect else response


def _discover(handler):
    """on_<Event> methods of the handler, collected once."""
    if handler is None:
        return {}
    return {name: getattr(handler, name) for name in dir(handler)
            if name.startswith("on_") and callable(getattr(handler, name))}
