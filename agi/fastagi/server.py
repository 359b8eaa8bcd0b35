"""FastAGI server: a gevent StreamServer with a bounded pool, routing by agi_network_script.

A bad peer (junk, a half-sent environment, an over-long line, a stall) costs
one log line and its own connection, never the server or other calls.
"""
import logging
import socket
import time
from typing import Callable, NamedTuple, Optional

from gevent.pool import Pool
from gevent.server import StreamServer

from agi.errors import AgiError, AgiHangup
from agi.fastagi.protocol import AgiProtocolError
from agi.fastagi.session import AgiSession

log = logging.getLogger("crmagi.agi")


class Route(NamedTuple):
    """What serves one request: ``handler(session, flow, accepted_at)``, or why nothing does."""
    route: Optional[str]
    handler: Optional[Callable]
    flow: object
    problem: str = ""
    answer_error: bool = False      # set CRM_STATUS=error before closing (a request for no tenant)


class Router:
    """Script name -> handler(session, flow, accepted_at); a duplicate is a start-up error."""

    def __init__(self, routes=None):
        self._routes = {}
        for name, handler in (routes or {}).items():
            self.add(name, handler)

    def add(self, name, handler):
        if name in self._routes:
            raise ValueError("FastAGI route %r is defined twice" % name)
        self._routes[name] = handler

    def get(self, name):
        return self._routes.get(name)

    def names(self):
        return sorted(self._routes)


LISTEN_BACKLOG = 1024


def make_listener(address):
    """The one FastAGI socket of all worker processes, bound by the parent
    (agi/ops/workers.py), which passes it to each worker.  One accept queue for all: a worker
    busy (worker 0 also follows AMI) or frozen accepts less and the others take the calls.
    With one socket per worker (SO_REUSEPORT) the kernel hashed each connection to a worker
    whatever its load, and the connections queued at a worker that died were reset.

    Bound, not listening: the first worker ready to answer makes it listen (FastAgiServer.start).
    Until then a call is refused and the dialplan goes on at once; a listening socket would have
    queued it while the workers imported and started, and Asterisk waits for the first command
    without a time limit (the fault campaign saw answers 566-604 ms after connect, past [agi]
    timeout, right after each restart)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def is_listening(sock):
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


class FastAgiServer:
    def __init__(self, listen, router, flow, env_timeout=2.0, reply_timeout=2.0, max_sessions=500,
                 listener=None, observe=None, pick=None):
        """``pick(env)`` -> Route: which handler and CallFlow serve a request (agi/tenants
        picks the tenant's); default: ``router`` by script name, with ``flow``.  ``listener``:
        the socket shared with other workers (make_listener), used instead of ``listen``."""
        self.router = router
        self.pick = pick or self._by_script
        # observe(route, CRM_STATUS or None, seconds from accept to close): the metrics hook
        self.observe = observe or (lambda route, status, seconds: None)
        self.flow = flow
        self.env_timeout = env_timeout
        self.reply_timeout = reply_timeout
        self.pool = Pool(max_sessions)
        self.listener = listener
        self.server = StreamServer(listen if listener is None else listener, self.handle, spawn=self.pool)
        if listener is not None:
            # One accept per wake-up: gevent takes up to 100 queued connections at once, so the
            # busiest worker, waking late, would take all that queued meanwhile.
            self.server.max_accept = 1
        self.stats = {"sessions": 0, "errors": 0}

    @property
    def address(self):
        return self.server.address

    def start(self):
        if self.listener is not None:       # the first worker ready opens the shared queue
            self.listener.listen(LISTEN_BACKLOG)
        self.server.start()
        log.info("FastAGI listening on %s:%d (routes: %s)", self.address[0], self.address[1],
                 ", ".join(self.router.names()))

    def close(self):
        """Stop accepting now (the listening socket closes); sessions in progress go on."""
        if not self.server.closed:
            self.server.close()

    def stop(self, timeout=5.0):
        """Stop accepting, let running sessions finish for ``timeout`` s, then kill them."""
        self.server.stop(timeout=timeout)

    def handle(self, sock, address):
        accepted_at = time.monotonic()
        session = AgiSession(sock, address, reply_timeout=self.reply_timeout)
        self.stats["sessions"] += 1
        route = None
        try:
            env = session.read_env(self.env_timeout)
            picked = self.pick(env)
            if picked.handler is None:
                log.error("FastAGI %s from %s:%s (uniqueid %s): %s", env.get("network_script"), address[0],
                          address[1], env.get("uniqueid"), picked.problem)
                self.stats["errors"] += 1
                if picked.answer_error:       # the dialplan goes on at once, knowing nothing was found
                    session.set_variable("CRM_STATUS", "error")
                return
            route = picked.route
            picked.handler(session, picked.flow, accepted_at)
        except AgiHangup:
            log.info("FastAGI %s from %s: caller hung up", self._what(session), address[0])
        except (AgiError, AgiProtocolError) as exc:
            self.stats["errors"] += 1
            log.warning("FastAGI %s from %s:%s dropped: %s", self._what(session), address[0], address[1], exc)
        except Exception:
            self.stats["errors"] += 1
            log.exception("FastAGI %s from %s:%s failed", self._what(session), address[0], address[1])
        finally:
            session.close()
            if route is not None:
                self.observe(route, session.variables.get("CRM_STATUS"), session.closed_at - accepted_at)

    def _by_script(self, env):
        handler = self.router.get(env.script)
        if handler is None:
            return Route(None, None, None, "unknown script %r; known: %s" % (env.script, ", ".join(self.router.names())))
        return Route(env.script, handler, self.flow)

    @staticmethod
    def _what(session):
        env = session.env or {}
        return "%s (uniqueid %s)" % (env.get("network_script", "<no env>"), env.get("uniqueid", "?"))
