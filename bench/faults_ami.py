"""The fault campaign's Asterisk Manager: the recorded AMI events of each call, made distinct.

Each call of the campaign plays one recorded scenario of shared/fixtures/asterisk (an
answered or missed inbound call, an answered or busy outbound one).  ``Scenario`` turns
its event frames into a template once: every Uniqueid/Linkedid-like value and every
channel name's ``-0000000N`` suffix becomes a slot, filled per call so that the call's
Linkedid is the linkedid its AGI sessions carry and no two calls share a channel, bridge
or uniqueid.  ``AmiFeed`` is a loopback AMI server (threads, plain sockets) that answers
crmagi's Login/Filter/Ping/list actions like tests/fake_ami.py, applies the Filter
whitelist as Asterisk does, and streams each call's events when the campaign says the
call happens; ``drop()`` closes the socket as an Asterisk restart does.
"""
import re
import socket
import threading

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
    """A loopback AMI server for one client (crmagi) at a time."""

    def __init__(self, secret="crmsecret", port=0):
        self.secret = secret
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()        # conn and filters
        self.send_lock = threading.Lock()   # one writer at a time: replies and streamed calls
        self.conn = None               # the logged-in client socket
        self.filters = []
        self.connections = self.drops = self.sent_calls = self.skipped_calls = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._closed = True
        self.listener.close()
        self.drop()

    def drop(self):
        """Close the client's socket (what crmagi sees when Asterisk restarts)."""
        with self.lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            self.drops += 1
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def connected(self):
        return self.conn is not None

    def send_call(self, scenario, linkedid, serial, epoch):
        """Stream one call's events now; a call while nobody is logged in is not seen."""
        with self.lock:
            conn, filters = self.conn, self.filters
        if conn is None:
            self.skipped_calls += 1
            return False
        keep = (lambda f: any(p.search(f) for p in filters)) if filters else None
        data = scenario.render(linkedid, serial, epoch, keep)
        try:
            with self.send_lock:
                conn.sendall(data)
        except OSError:
            self.skipped_calls += 1
            return False
        self.sent_calls += 1
        return True

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf, filters = b"", []
        try:
            conn.sendall(BANNER)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                while b"\r\n\r\n" in buf:
                    frame, buf = buf.split(b"\r\n\r\n", 1)
                    headers = dict(line.split(b": ", 1) for line in frame.split(b"\r\n") if b": " in line)
                    reply = self._answer(conn, headers, filters)
                    with self.send_lock:
                        conn.sendall(reply)
        except OSError:
            pass
        finally:
            with self.lock:
                if self.conn is conn:
                    self.conn = None
            conn.close()

    def _answer(self, conn, headers, filters):
        action = headers.get(b"Action", b"").decode().lower()
        head = b"ActionID: " + headers.get(b"ActionID", b"") + b"\r\n"
        if action == "login":
            if headers.get(b"Secret", b"").decode() != self.secret:
                return b"Response: Error\r\n" + head + b"Message: Authentication failed\r\n\r\n"
            with self.lock:
                old, self.conn, self.filters = self.conn, conn, filters
            if old is not None and old is not conn:
                old.close()
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
