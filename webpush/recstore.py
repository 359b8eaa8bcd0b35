"""Where recordings are read from: a local folder, or the PBX's monitor folder over HTTP(S).

``LocalStore``: crmagi runs on the PBX box (or mounts its monitor folder).
``RemoteStore``: the PBX serves its monitor folder over HTTP(S), e.g. nginx with
basic auth; crmagi fetches with ``Range`` and streams, so browsers never reach
the PBX.  Both take the recording's name relative to the store (webpush/recpaths.py
has already refused anything that climbs out); the local store also refuses a
symlink that leads out of its folder.  A missing or unreachable file is
``NotAvailable``, which the page shows as "recording not available".
"""
import base64
import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

from .recpaths import OutsideStore

log = logging.getLogger("crmagi.recordings")
CHUNK = 64 * 1024
STAT_TTL = 30.0          # seconds a remote HEAD answer is reused (a page lists many calls)
STAT_KEEP = 2048


class NotAvailable(Exception):
    """The recording is missing, unreadable or its server does not answer."""


class Source(NamedTuple):
    size: int
    etag: str             # strong validator of these bytes, quoted
    last_modified: str    # HTTP date


def _validators(size, mtime):
    return '"%x-%x"' % (size, int(mtime)), formatdate(mtime, usegmt=True)


class LocalStore:
    kind = "local"

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.identity = "local:" + self.root

    def path(self, name):
        path = os.path.realpath(os.path.join(self.root, name))
        if not path.startswith(self.root + os.sep):
            raise OutsideStore("%s leads out of %s" % (name, self.root))
        return path

    def stat(self, name) -> Source:
        try:
            info = os.stat(self.path(name))
        except OSError as exc:
            raise NotAvailable("%s: %s" % (name, exc.strerror)) from None
        if not os.path.isfile(self.path(name)):
            raise NotAvailable("%s: not a file" % name)
        return Source(info.st_size, *_validators(info.st_size, info.st_mtime))

    def read(self, name, start, length):
        """The bytes [start, start + length), in chunks."""
        try:
            handle = open(self.path(name), "rb")
        except OSError as exc:
            raise NotAvailable("%s: %s" % (name, exc.strerror)) from None
        return file_chunks(handle, start, length)

    @contextlib.contextmanager
    def local_copy(self, name, scratch_dir):
        yield self.path(name)


def file_chunks(handle, start, length):
    """The bytes [start, start + length) of an open file, in chunks; the file is closed after."""
    handle.seek(start)
    return _limited(handle.read, length, handle.close)


def _limited(read, length, close):
    """At most ``length`` bytes from ``read``, in chunks; a broken source ends the body early
    (the browser sees a short response and asks again with Range)."""
    try:
        while length > 0:
            data = read(min(CHUNK, length))
            if not data:
                return
            length -= len(data)
            yield data
    except (OSError, http.client.HTTPException) as exc:
        log.warning("recording stream broke: %s", exc)
    finally:
        close()


class RemoteStore:
    kind = "remote"

    def __init__(self, base_url, user="", password="", timeout=5.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("%r is not an http(s) URL" % base_url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base_path = parts.path.rstrip("/") + "/"
        self.timeout = timeout
        self.identity = "remote:%s://%s:%s%s" % (self.scheme, self.host, self.port, self.base_path)
        self.headers = {"User-Agent": "crmagi-recordings"}
        user, password = user or unquote(parts.username or ""), password or unquote(parts.password or "")
        if user or password:
            pair = ("%s:%s" % (user, password)).encode("utf-8")
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._stats = {}

    def _request(self, method, name, headers=None):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, self.base_path + quote(name), headers=dict(self.headers, **(headers or {})))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NotAvailable("%s: %s unreachable: %s" % (name, self.host, exc)) from None
        if response.status not in (200, 206):
            conn.close()
            raise NotAvailable("%s: the recordings server answered %d" % (name, response.status))
        return conn, response

    def stat(self, name) -> Source:
        now = time.monotonic()
        cached = self._stats.get(name)
        if cached and now - cached[0] < STAT_TTL:
            return cached[1]
        conn, response = self._request("HEAD", name)
        conn.close()
        try:
            size = int(response.getheader("Content-Length"))
        except (TypeError, ValueError):
            raise NotAvailable("%s: the recordings server sent no length" % name) from None
        etag, modified = response.getheader("ETag"), response.getheader("Last-Modified")
        if not etag or etag.startswith("W/"):
            stamp = _timestamp(modified)
            etag = _validators(size, stamp)[0] if stamp else '"%s"' % hashlib.sha256(name.encode()).hexdigest()[:16]
        source = Source(size, etag, modified or formatdate(usegmt=True))
        if len(self._stats) >= STAT_KEEP:
            self._stats.clear()
        self._stats[name] = (now, source)
        return source

    def read(self, name, start, length):
        if length <= 0:
            return iter(())
        conn, response = self._request("GET", name, {"Range": "bytes=%d-%d" % (start, start + length - 1)})
        if response.status == 200 and start:     # the server ignored Range: skip to the start
            response.read(start)
        return _limited(response.read, length, conn.close)

    @contextlib.contextmanager
    def local_copy(self, name, scratch_dir):
        """The whole file, downloaded to a temporary file (for sox)."""
        handle = tempfile.NamedTemporaryFile(dir=scratch_dir, prefix="fetch-", delete=False)
        try:
            with handle:
                conn, response = self._request("GET", name)
                try:
                    shutil.copyfileobj(response, handle, CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise NotAvailable("%s: download failed: %s" % (name, exc)) from None
                finally:
                    conn.close()
            yield handle.name
        finally:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)


def _timestamp(http_date):
    try:
        return parsedate_to_datetime(http_date).timestamp() if http_date else None
    except (TypeError, ValueError):
        return None
