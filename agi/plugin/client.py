"""The reference client of the plugin API, and what `crmagi plugin replay` runs.

Synchronous (websocket-client), so any Python program can use it: ``request`` sends a
message and returns crmagi's answer; commands crmagi sends meanwhile (a popup's
transfer, a click-to-call) go to ``on_command``, whose ``(ok, reason)`` is sent back as
``command_result``.  The protocol is in README.rst and agi/plugin/schemas/.
"""
import json
import time

import websocket

from agi.plugin import protocol

ANSWERS = ("welcome", "refused", "lookup_result", "ack", "error", "pong")


class PluginError(Exception):
    pass


class PluginClient:
    def __init__(self, url, key, on_command=None, timeout=10.0, extensions=()):
        self.url, self.key, self.timeout = url, key, timeout
        self.on_command = on_command or (lambda command: (False, "this client takes no commands"))
        self.extensions = list(extensions)
        self.ws = None
        self.welcome = None

    def connect(self):
        # suppress_origin: crmagi refuses what looks like a browser (an Origin that is not its own).
        self.ws = websocket.create_connection(self.url, timeout=self.timeout, suppress_origin=True)
        hello = {"type": "hello", "version": protocol.VERSION, "key": self.key}
        if self.extensions:
            hello["extensions"] = self.extensions
        answer = self.request(hello)
        if answer["type"] != "welcome":
            raise PluginError("refused: %s" % answer.get("reason"))
        self.welcome = answer
        return self

    def request(self, message):
        """Send one message, return crmagi's answer to it (commands are served meanwhile)."""
        self.ws.send(protocol.encode(message))
        while True:
            answer = self._receive()
            if answer.get("type") == "command":
                self._serve(answer)
            elif answer.get("type") in ANSWERS:
                return answer

    def serve_commands(self, seconds):
        """Only listen for crmagi's commands, for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self._receive()
            except websocket.WebSocketTimeoutException:
                break
            finally:
                self.ws.settimeout(self.timeout)
            if message.get("type") == "command":
                self._serve(message)

    def _receive(self):
        text = self.ws.recv()
        if not text:
            raise PluginError("crmagi closed the connection")
        return json.loads(text)

    def _serve(self, command):
        try:
            ok, reason = self.on_command(command)
        except Exception as exc:      # a broken handler answers, it does not leave crmagi waiting
            ok, reason = False, "client error: %s" % exc
        self.ws.send(protocol.encode({"type": "command_result", "id": command["id"], "ok": bool(ok),
                                      "reason": str(reason)[:200]}))

    def close(self):
        if self.ws is not None:
            self.ws.close()


def load_scenario(path):
    """A JSON list of plugin messages; a message may carry ``"wait": seconds`` to pause
    before it is sent (the key is not sent).  Each message is checked against its schema."""
    with open(path, encoding="utf-8") as handle:
        steps = json.load(handle)
    if not isinstance(steps, list):
        raise PluginError("%s: a JSON list of messages expected" % path)
    checked = []
    for number, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            raise PluginError("%s: step %d is not an object" % (path, number))
        message = {key: value for key, value in step.items() if key != "wait"}
        try:
            protocol.decode(protocol.encode(message))
        except protocol.BadMessage as exc:
            raise PluginError("%s: step %d: %s" % (path, number, exc)) from None
        checked.append((float(step.get("wait", 0)), message))
    return checked


def replay(client, steps, sleep=time.sleep):
    """Send the steps in order; yields (message, answer)."""
    for wait, message in steps:
        if wait:
            sleep(wait)
        yield message, client.request(message)
