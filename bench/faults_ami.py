"""The fault campaign's Asterisk Manager: the recorded AMI events of each call, made distinct.

Each call of the campaign plays one recorded scenario of shared/fixtures/asterisk (an
answered or missed inbound call, an answered or busy outbound one).  ``Scenario`` turns
its event frames into a template once: every Uniqueid/Linkedid-like value and every
channel name's ``-0000000N`` suffix becomes a slot, filled per call so that the call's
Linkedid is the linkedid its AGI sessions carry and no two calls share a channel, bridge
or uniqueid.  ``AmiFeed`` is a loopback AMI server (threads, plain sockets) that answers
crmagi's Login/Filter/Ping/list actions like tests/fake_ami.py, applies the Filter
whitelist as Asterisk does, and streams each call's events to every logged-in client
(one per crmagi worker) when the campaign says the call happens; ``drop()`` closes the
sockets as an Asterisk restart does.
"""
import re
import socket
import threading

from common import frames

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
_ID_KEY = re.compile(rb"^([A-Za-z]*(?:Uniqueid|Linkedid|UniqueID)): (.+)$")
_CHANNEL = re.compile(rb"^([A-Za-z]*Channel): (.+-)([0-9a-f]{8})((?:;[12])?)$")
# Events about the AMI session or Asterisk itself, not the call: sent once per login instead.
_SESSION_EVENTS = (b"Event: FullyBooted", b"Event: SuccessfulAuth", b"Event: Shutdown")
FULLY_BOOTED = b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 2\r\nLastReload: 2\r\nStatus: Fully Booted\r\n\r\n"


def recorded_events(path):
    """Event frames of a recorded stream (responses to the recorder's own actions left out)."""
    data = open(path, "rb").read()
    _, _, rest = data.partition(b"\r\n")
    return [f for f in rest.split(b"\r\n\r\n") if f.startswith(b"Event: ") and not f.startswith(_SESSION_EVENTS)]


class Scenario:
    """One recorded call as a template: literal byte strings and slot numbers."""

    def __init__(self, path):
        self.frames = recorded_events(path)
        linkedids = {m.group(2) for f in self.frames for line in f.split(b"\r\n")
                     for m in [_ID_KEY.match(line)] if m and m.group(1) == b"Linkedid"}
        self.slots = {v: 0 for v in linkedids}       # slot 0: the call's linkedid
        self.channel_slots = {}
        self.templates = [self._template(f) for f in self.frames]

    def _template(self, frame):
        parts = []
        for line in frame.split(b"\r\n"):
            match = _ID_KEY.match(line)
            channel = _CHANNEL.match(line)
            if match and not match.group(2).startswith(b"<"):
                slot = self.slots.setdefault(match.group(2), len(self.slots) + 1)
                parts += [match.group(1) + b": ", slot, b"\r\n"]
            elif channel:
                key = channel.group(3)
                slot = self.channel_slots.setdefault(key, len(self.channel_slots))
                parts += [channel.group(1) + b": " + channel.group(2), ("chan", slot), channel.group(4) + b"\r\n"]
            else:
                parts.append(line + b"\r\n")
        return parts

    def render(self, linkedid, serial, epoch, keep=None):
        """The call's frames (each ended by the blank line); ``keep``: a frame filter."""
        values = {0: linkedid.encode()}
        out = []
        for frame, parts in zip(self.frames, self.templates):
            if keep is not None and not keep(frame):
                continue
            for part in parts:
                if isinstance(part, bytes):
                    out.append(part)
                elif isinstance(part, tuple):
                    out.append(b"%08x" % ((serial % (1 << 26)) * 16 + part[1]))
                else:
                    value = values.get(part)
                    if value is None:
                        value = values[part] = b"%d.%d" % (epoch + part, serial)
                    out.append(value)
            out.append(b"\r\n")
        return b"".join(out)


class AmiFeed:
    """A loopback AMI server; every logged-in client gets every call's events."""

    def __init__(self, secret="crmsecret", port=0):
        self.secret = secret
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()        # clients
        self.clients = {}                   # logged-in socket -> (its Filter regexes, its send lock)
        self.connections = self.drops = self.sent_calls = self.skipped_calls = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._closed = True
        self.listener.close()
        self.drop()

    def drop(self):
        """Close the clients' sockets (what crmagi sees when Asterisk restarts)."""
        with self.lock:
            conns, self.clients = list(self.clients), {}
        for conn in conns:
            self.drops += 1
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def send_call(self, scenario, linkedid, serial, epoch):
        """Stream one call's events now; a call while nobody is logged in is not seen."""
        with self.lock:
            clients = list(self.clients.items())
        sent = False
        for conn, (filters, send_lock) in clients:
            keep = (lambda f, filters=filters: any(p.search(f) for p in filters)) if filters else None
            try:
                with send_lock:
                    conn.sendall(scenario.render(linkedid, serial, epoch, keep))
                sent = True
            except OSError:
                continue
        if sent:
            self.sent_calls += 1
        else:
            self.skipped_calls += 1
        return sent

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        filters, send_lock = [], threading.Lock()
        try:
            conn.sendall(BANNER)
            for frame in frames(conn, b"\r\n\r\n"):
                headers = dict(line.split(b": ", 1) for line in frame.split(b"\r\n") if b": " in line)
                reply = self._answer(conn, headers, filters, send_lock)
                with send_lock:
                    conn.sendall(reply)
        except OSError:
            pass
        finally:
            with self.lock:
                self.clients.pop(conn, None)
            conn.close()

    def _answer(self, conn, headers, filters, send_lock):
        action = headers.get(b"Action", b"").decode().lower()
        head = b"ActionID: " + headers.get(b"ActionID", b"") + b"\r\n"
        if action == "login":
            if headers.get(b"Secret", b"").decode() != self.secret:
                return b"Response: Error\r\n" + head + b"Message: Authentication failed\r\n\r\n"
            with self.lock:
                self.clients[conn] = (filters, send_lock)
            return b"Response: Success\r\n" + head + b"Message: Authentication accepted\r\n\r\n" + FULLY_BOOTED
        if action == "filter":
            filters.append(re.compile(headers.get(b"Filter", b"")))
            return b"Response: Success\r\n" + head + b"Message: Filter Added Successfully\r\n\r\n"
        if action == "ping":
            return b"Response: Success\r\n" + head + b"Ping: Pong\r\nTimestamp: 1795699120.000000\r\n\r\n"
        if action in ("coreshowchannels", "queuestatus", "agents"):
            done = {"coreshowchannels": b"CoreShowChannelsComplete", "queuestatus": b"QueueStatusComplete",
                    "agents": b"AgentsComplete"}[action]
            return (b"Response: Success\r\n" + head + b"EventList: start\r\nMessage: will follow\r\n\r\n"
                    b"Event: " + done + b"\r\n" + head + b"EventList: Complete\r\nListItems: 0\r\n\r\n")
        return b"Response: Success\r\n" + head + b"Message: ok\r\n\r\n"
