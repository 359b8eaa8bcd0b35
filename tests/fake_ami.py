"""A fake Asterisk Manager for tests: replays a recorded AMI stream to a real client.

It answers the client's own actions (Login, Ping, list actions) in Asterisk's
format with the client's ActionIDs, streams the recorded events (minus the
recording client's own responses), and can drop the connection mid-stream
the way `core restart now` does (Shutdown event, then EOF, then refused
connects for a while).
"""
import gevent
from gevent import socket
from gevent.server import StreamServer

from agi.ami import amiproto
from conftest import ASTERISK

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def recorded_events(name):
    """The event frames of a recorded stream (responses to the recorder's actions left out)."""
    data = (ASTERISK / ("%s.ami.txt" % name)).read_bytes()
    _, rest = amiproto.split_banner(data)
    frames, _ = amiproto.split_frames(rest)
    return [f for f in frames if f.startswith(b"Event: ")]


class FakeAmi:
    def __init__(self, events=(), secret="crmsecret", list_events=None):
        self.events = list(events)
        self.secret = secret
        self.list_events = list_events or {}     # action name -> list of event frames
        self.actions = []                         # every action received (Message)
        self.connections = 0
        self.drop_after = None                   # events sent before the link drops (once)
        self.refuse = False
        self.pace = 0.0                          # seconds between streamed frames (Asterisk is not instant)
        self.stream_after = "Login"              # the action whose answer starts the stream
        self.unanswered = set()                  # actions it never answers (an Asterisk too busy)
        self.delays = {}                         # action -> seconds before its answer (a loaded Asterisk)
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    def start(self):
        self.server.start()
        return self

    @property
    def port(self):
        return self.server.address[1]

    def stop(self):
        self.server.stop(timeout=1)

    def _handle(self, sock, _address):
        if self.refuse:
            sock.close()
            return
        self.connections += 1
        sock.sendall(BANNER)
        buf, sent = b"", 0
        streamer = None
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                frames, buf = amiproto.split_frames(buf + data)
                for frame in frames:
                    msg = amiproto.parse_frame(frame)
                    self.actions.append(msg)
                    gevent.sleep(self.delays.get(msg.get("Action"), 0))
                    reply = self._answer(msg)
                    if reply:
                        sock.sendall(reply)
                    if msg.get("Action") == self.stream_after and reply.startswith(b"Response: Success"):
                        streamer = gevent.spawn(self._stream, sock)
        except OSError:
            return
        finally:
            if streamer:
                streamer.kill()

    def _stream(self, sock):
        events = self.events
        for index, frame in enumerate(events):
            if self.drop_after is not None and index == self.drop_after:
                self.drop_after = None
                sock.sendall(b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\n"
                             b"Restart: True\r\n\r\n")
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                self.events = events[index:]      # what the restarted Asterisk still has to say
                return
            sock.sendall(frame + b"\r\n\r\n")
            gevent.sleep(self.pace)
        self.events = []

    def _answer(self, msg):
        action, aid = msg.get("Action", ""), msg.get("ActionID", "")
        if action in self.unanswered:
            return b""
        head = "ActionID: %s\r\n" % aid
        if action == "Login":
            if msg.get("Secret") != self.secret:
                return ("Response: Error\r\n%sMessage: Authentication failed\r\n\r\n" % head).encode()
            return ("Response: Success\r\n%sMessage: Authentication accepted\r\n\r\n" % head).encode()
        if action == "Ping":
            return ("Response: Success\r\n%sPing: Pong\r\nTimestamp: 1795699120.000000\r\n\r\n" % head).encode()
        if action in self.list_events or action in ("CoreShowChannels", "QueueStatus", "Agents"):
            out = "Response: Success\r\n%sEventList: start\r\nMessage: will follow\r\n\r\n" % head
            body = "".join(f.decode() + "\r\n" + head + "\r\n" for f in self.list_events.get(action, []))
            done = "Event: %sComplete\r\n%sEventList: Complete\r\nListItems: %d\r\n\r\n" % (
                "CoreShowChannels" if action == "CoreShowChannels" else action.rstrip("s") + "s",
                head, len(self.list_events.get(action, [])))
            return (out + body + done).encode()
        return ("Response: Success\r\n%sMessage: ok\r\n\r\n" % head).encode()
