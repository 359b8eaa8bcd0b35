"""``GET/HEAD /recordings/<signed>``: a recording over HTTP, with Range, for an audio element.

Answers: 200 (whole file) or 206 (one range; seeking), 304 (If-None-Match), 416,
403 (bad, expired or foreign URL; recorded path outside the store), 404 (the
file is missing or the PBX does not answer), 502 (sox failed).  The audio is
cacheable by this browser only, for as long as the URL lives; ``?download=1``
asks the browser to save it instead of playing it.
"""
import logging


from . import ranges
from .recordings import Refused
from .recstore import NotAvailable, file_chunks
from .transcode import ConversionFailed

log = logging.getLogger("crmagi.recordings")
_COMMON = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]


def _text(start_response, status, text):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
                   + _COMMON)
    return [text.encode("utf-8") + b"\n"]


def serve(recordings, environ, start_response):
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")] + _COMMON)
        return []
    try:
        playable = recordings.source(environ.get("PATH_INFO", ""))
    except Refused as exc:
        log.info("recording refused: %s", exc)
        return _text(start_response, "403 Forbidden", "recording refused: %s" % exc)
    except NotAvailable as exc:
        log.info("recording not available: %s", exc)
        return _text(start_response, "404 Not Found", "recording not available")
    except ConversionFailed as exc:
        log.warning("recording not converted: %s", exc)
        return _text(start_response, "502 Bad Gateway", "recording not available (conversion failed)")
    except Exception as exc:        # the CRM did not answer the access check
        log.warning("recording request failed: %s", exc)
        return _text(start_response, "503 Service Unavailable", "recording not available right now")
    return _send(recordings, playable, environ, start_response, method == "HEAD")


def _headers(playable, now, download):
    disposition = "attachment" if download else "inline"
    return [("Content-Type", playable.content_type), ("Accept-Ranges", "bytes"),
            ("ETag", playable.etag), ("Last-Modified", playable.last_modified),
            # Per user and short-lived: no shared cache may keep it, this browser until the URL expires.
            ("Cache-Control", "private, max-age=%d" % max(0, playable.expires_at - int(now))),
            ("Content-Disposition", '%s; filename="%s"' % (disposition, playable.filename))] + _COMMON


def _send(recordings, playable, environ, start_response, head):
    headers = _headers(playable, recordings.clock(), "download=1" in environ.get("QUERY_STRING", ""))
    if playable.etag in _tags(environ.get("HTTP_IF_NONE_MATCH")):
        start_response("304 Not Modified", headers)
        return []
    header = environ.get("HTTP_RANGE")
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range and if_range.strip() != playable.etag:
        header = None           # the browser holds other bytes: send the whole new file
    try:
        wanted = ranges.parse(header, playable.size)
    except ranges.Unsatisfiable:
        start_response("416 Range Not Satisfiable",
                       [("Content-Range", "bytes */%d" % playable.size)] + _COMMON)
        return []
    start, length, status = 0, playable.size, "200 OK"
    if wanted is not None:
        start, length, status = wanted.start, wanted.length, "206 Partial Content"
        headers.append(("Content-Range", wanted.content_range(playable.size)))
    headers.append(("Content-Length", str(length)))
    if head:
        start_response(status, headers)
        return []
    try:
        body = _body(recordings, playable, start, length)
    except NotAvailable as exc:
        log.info("recording not available: %s", exc)
        return _text(start_response, "404 Not Found", "recording not available")
    start_response(status, headers)
    return body


def _body(recordings, playable, start, length):
    if playable.path is not None:
        try:
            return file_chunks(open(playable.path, "rb"), start, length)
        except OSError as exc:          # trimmed from the cache between the check and now
            raise NotAvailable("%s: %s" % (playable.path, exc.strerror)) from None
    return recordings.store.read(playable.name, start, length)


def _tags(header):
    return {tag.strip() for tag in (header or "").split(",") if tag.strip()}



