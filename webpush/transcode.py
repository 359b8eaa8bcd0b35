"""Recordings Chromium cannot play (GSM, WAV49, raw mu-law ...) converted once with sox.

The result, 16-bit PCM WAV, is cached in ``[recordings] cache_dir`` under a key of
the store, the name and the source's validator (a re-recorded file gets a new
entry), and the cache is kept under ``cache_mb`` by removing the entries used
least recently.  Two requests for the same recording wait for one conversion.
"""
import hashlib
import logging
import os
import subprocess

from gevent.event import AsyncResult
from gevent.lock import BoundedSemaphore

log = logging.getLogger("crmagi.recordings")
SOX_TIMEOUT = 120.0
CONVERSIONS = 2           # at once: sox is CPU work on a box that also answers calls


class ConversionFailed(Exception):
    pass


class Transcoder:
    def __init__(self, cache_dir, max_bytes, sox="sox"):
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.sox = sox
        self._running = {}      # key -> AsyncResult of the conversion under way
        self._slots = BoundedSemaphore(CONVERSIONS)

    @staticmethod
    def key(store_identity, name, etag):
        return hashlib.sha256("\0".join((store_identity, name, etag)).encode("utf-8")).hexdigest()

    def cached(self, key):
        """The converted file's path when it is in the cache (marked as used), else None."""
        path = os.path.join(self.cache_dir, key + ".wav")
        try:
            os.utime(path)
        except OSError:
            return None
        return path

    def convert(self, key, sox_input, local_copy):
        """The cached PCM WAV of the source; ``local_copy(dir)`` is a context manager giving the
        source as a local file (a remote store downloads it only when a conversion runs)."""
        found = self.cached(key)
        if found:
            return found
        running = self._running.get(key)
        if running is not None:
            return running.get()           # the same path, or the same exception
        running = self._running[key] = AsyncResult()
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            with self._slots, local_copy(self.cache_dir) as source:
                path = self._sox(key, sox_input, source)
            running.set(path)
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            del self._running[key]
        self.trim(keep=path)
        return path

    def _sox(self, key, sox_input, source):
        final = os.path.join(self.cache_dir, key + ".wav")
        partial = final + ".part"
        command = [self.sox, *sox_input, source, "-t", "wav", "-e", "signed-integer", "-b", "16", partial]
        try:
            done = subprocess.run(command, capture_output=True, timeout=SOX_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConversionFailed("sox: %s" % exc) from None
        if done.returncode != 0:
            _remove(partial)
            raise ConversionFailed("sox failed: %s" % done.stderr.decode("utf-8", "replace").strip()[:300])
        os.replace(partial, final)
        return final

    def trim(self, keep=None):
        """Remove least recently used entries until the cache fits max_bytes."""
        try:
            names = [n for n in os.listdir(self.cache_dir) if n.endswith(".wav")]
        except OSError:
            return
        entries = []
        for name in names:
            path = os.path.join(self.cache_dir, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                _remove(path)
                total -= size


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
