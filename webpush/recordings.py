"""Call recordings for the browser: which calls of a page have one, and the file of a URL.

A tab asks over its websocket for the recordings of the Call ids on its page
(``{"type": "recordings", "calls": [...]}``); crmagi answers, for the Calls the
tab's user may see (crmsync/access.py) and that have a recording, either a
signed URL (webpush/recording_urls.py) or "recording not available" (the file is
missing, unreachable, or its recorded path lies outside the store).  Calls the
user may not see, or without a recording, are left out of the answer.

When a URL is used, ``source`` checks everything again: the signature and
expiry, that the user is still active and may still see the Call, and the
recorded path; the file then comes only from what crmagi recorded for the Call.
"""
import logging
import os
import posixpath
import time
from typing import NamedTuple, Optional

from gevent.lock import BoundedSemaphore
from gevent.pool import Pool

from . import recording_urls
from .recpaths import WAV_OTHER, OutsideStore, format_of, relative_name, wav_format_tag
from .recstore import NotAvailable

log = logging.getLogger("crmagi.recordings")
NOT_AVAILABLE = "recording not available"
LOOKUPS = 20              # pages asking at once; more wait (each costs a CRM query and stats)
PLAYABLE_WAV = (1, 3)     # PCM and IEEE float: what browsers play from a RIFF file
HEADER_BYTES = 512
EMPTY_WAV = 44            # bytes: a WAV header and no sound (MixMonitor of a silent Local channel)
STATS = 10                # files checked at once for one page


class Refused(Exception):
    """403: the URL or the recorded path is not acceptable; the message says why (logged)."""


class Playable(NamedTuple):
    """What to send: from the store as is (``name``), or a converted file in the cache (``path``)."""
    call_id: str
    name: str
    content_type: str
    size: int
    etag: str
    last_modified: str
    expires_at: int
    path: Optional[str] = None        # the converted file, when a conversion was needed

    @property
    def filename(self):
        base = posixpath.splitext(posixpath.basename(self.name))[0] or "recording"
        return base + (".mp3" if self.content_type == "audio/mpeg" else ".wav")


class Recordings:
    def __init__(self, secret, access, store, transcoder, monitor_dir, url_seconds=600, clock=time.time):
        self.secret = secret
        self.access = access              # crmsync.access.RecordAccess
        self.store = store                # recstore.LocalStore / RemoteStore
        self.transcoder = transcoder
        self.monitor_dir = monitor_dir
        self.url_seconds = url_seconds
        self.clock = clock
        self._slots = BoundedSemaphore(LOOKUPS)

    # -- the page asks ---------------------------------------------------------
    def answer(self, user_id, call_ids):
        """The items of the ``recordings`` reply to a tab of ``user_id``."""
        with self._slots:
            try:
                found = self.access.recordings(user_id, call_ids)
            except Exception as exc:
                log.warning("recordings for user %s: CRM unavailable: %s", user_id, exc)
                return []        # the page shows no players; the next page load asks again
            if not found:
                return []
            now = self.clock()
            # In parallel: a PBX that does not answer costs one fetch_timeout, not one per call.
            return Pool(STATS).map(lambda pair: self._item(user_id, pair[0], pair[1], now), sorted(found.items()))

    def _item(self, user_id, call_id, recorded, now):
        try:
            self._stat(self._name(call_id, recorded))
        except (OutsideStore, NotAvailable, Refused) as exc:
            log.info("recording of call %s not available: %s", call_id, exc)
            return {"call": call_id, "missing": NOT_AVAILABLE}
        path = recording_urls.mint(self.secret, user_id, call_id, now, self.url_seconds)
        return {"call": call_id, "url": path, "download": path + "?download=1",
                "expires": int(now) + self.url_seconds}

    def _name(self, call_id, recorded):
        try:
            name = relative_name(recorded, self.monitor_dir)
        except OutsideStore as exc:
            log.warning("call %s: recorded path %r refused: %s", call_id, recorded, exc)
            raise
        if format_of(name) is None:
            raise Refused("call %s: %s is not a format crmagi can serve" % (call_id, name))
        return name

    def _stat(self, name):
        source = self.store.stat(name)
        if source.size <= EMPTY_WAV:
            raise NotAvailable("%s: no audio (%d bytes)" % (name, source.size))
        return source

    # -- a URL is used ---------------------------------------------------------
    def source(self, url_path) -> Playable:
        """What the URL may play; Refused (403), NotAvailable (404) or transcode errors otherwise."""
        try:
            grant = recording_urls.verify(self.secret, url_path, self.clock())
        except recording_urls.UrlError as exc:
            raise Refused(str(exc)) from None
        found = self.access.recordings(grant.user_id, [grant.call_id])
        if found is None:
            raise Refused("user %s is not an active CRM user" % grant.user_id)
        if grant.call_id not in found:
            raise Refused("user %s may not see call %s (or it has no recording)" % (grant.user_id, grant.call_id))
        try:
            name = self._name(grant.call_id, found[grant.call_id])
        except OutsideStore as exc:
            raise Refused(str(exc)) from None
        fmt = format_of(name)
        try:
            source = self._stat(name)
        except OutsideStore as exc:       # a symlink out of the store
            raise Refused(str(exc)) from None
        if fmt.name == "wav":
            header = b"".join(self.store.read(name, 0, min(HEADER_BYTES, source.size)))
            if wav_format_tag(header) not in PLAYABLE_WAV:
                fmt = WAV_OTHER
        playable = Playable(grant.call_id, name, fmt.content_type, source.size, source.etag,
                            source.last_modified, grant.expires_at)
        if fmt.sox_input is None:
            return playable
        return self._converted(playable, fmt)

    def _converted(self, playable, fmt):
        key = self.transcoder.key(self.store.identity, playable.name, playable.etag)
        path = self.transcoder.convert(key, fmt.sox_input,
                                       lambda scratch: self.store.local_copy(playable.name, scratch))
        return playable._replace(path=path, size=os.path.getsize(path), etag='"%s"' % key[:32])
