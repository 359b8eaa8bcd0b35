"""How popup events reach every crmagi box: in-process, or over Redis pub/sub.

One box needs nothing: ``LocalBus`` hands events straight to the subscriber.
Several boxes behind one CRM share the browsers: each publishes its calls'
events on a Redis channel and applies everyone's (``RedisBus``), so a user's
tab may be connected to any box.  Redis is an existing, well-understood engine;
nothing here is a home-made cluster protocol.
"""
import json
import logging

import gevent

log = logging.getLogger("crmagi.webpush")
CHANNEL = "crmagi:popups"


class LocalBus:
    shared = False

    def __init__(self):
        self.handler = None

    def subscribe(self, handler):
        self.handler = handler

    def publish(self, event):
        if self.handler is not None:
            self.handler(event)

    def close(self):
        self.handler = None


class RedisBus:
    """Pub/sub on one channel; reconnects with back-off when Redis restarts."""

    shared = True

    def __init__(self, url, channel=CHANNEL, retry=(0.1, 5.0)):
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=None,
                                           health_check_interval=30)
        self.publisher = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.channel = channel
        self.retry = retry
        self.handler = None
        self._reader = None
        self.ready = gevent.event.Event()

    def subscribe(self, handler):
        self.handler = handler
        self._reader = gevent.spawn(self._listen)

    def publish(self, event):
        try:
            self.publisher.publish(self.channel, json.dumps(event, separators=(",", ":")))
        except Exception as exc:       # a popup lost is better than a call held up
            log.warning("cannot publish a popup event on Redis: %s", exc)

    def _listen(self):
        delay = self.retry[0]
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.ready.set()
                delay = self.retry[0]
                for message in pubsub.listen():
                    self._deliver(message)
            except Exception as exc:
                self.ready.clear()
                log.warning("Redis popup channel lost (%s); retrying in %.1fs", exc, delay)
                gevent.sleep(delay)
                delay = min(delay * 2, self.retry[1])

    def _deliver(self, message):
        if message.get("type") != "message":
            return
        try:
            event = json.loads(message["data"])
        except ValueError:
            log.warning("junk on the popup channel: %r", message["data"][:100])
            return
        if isinstance(event, dict) and self.handler is not None:
            self.handler(event)

    def close(self):
        if self._reader is not None:
            self._reader.kill()
        self.client.close()
        self.publisher.close()


def make_bus(redis_url):
    return RedisBus(redis_url) if redis_url else LocalBus()
