"""Keeping secrets out of logs and command output.

Which settings are secret is marked once, in the settings table of agi/config.py
(``secret="value"`` or ``secret="url"``: the password inside a URL);
``config.secret_values(config)`` collects their current values.  This module
only masks: URLs for display, and any text (a log record, a traceback, an
error from a driver) that happens to contain one of those values.
"""
import logging
import sys
import traceback
from urllib.parse import unquote, urlsplit

MASK = "***"
# Shorter values are not searched for in free text: masking every "1" of a log line
# would make it unreadable.  `crmagi check` warns about secrets this short.
MIN_REDACTED = 4


def url_password(url):
    """The password of scheme://user:password@host/..., as written (None when there is none)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_url(url):
    """The URL with its password replaced by ***, like SQLAlchemy's hide_password."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc="%s:%s@%s" % (user, MASK, hostinfo)).geturl()


def with_unquoted(values):
    """Each value and its %-decoded form (a URL password may be written either way)."""
    found = []
    for value in values:
        found += [value, unquote(value)]
    return tuple(dict.fromkeys(found))


def redact(text, secrets):
    """``text`` with every secret value replaced by ***; longest first, so a secret that
    contains another is masked whole."""
    for secret in sorted((s for s in secrets if s and len(s) >= MIN_REDACTED), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: the message and traceback of every record, with secrets masked."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record):
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def install(secrets):
    """Mask secrets in everything the root logger's handlers write, and in the traceback
    of an exception nobody caught (`crmagi serve` prints it to the journal)."""
    secrets = tuple(secrets)
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactingFilter)]
        handler.addFilter(RedactingFilter(secrets))

    def excepthook(kind, value, tb):
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb)), secrets))

    sys.excepthook = excepthook
    # gevent prints a greenlet's uncaught exception itself, line by line, to this stream.
    import gevent

    hub = gevent.get_hub()
    hub.exception_stream = _RedactingStream(hub.exception_stream or sys.stderr, secrets)


class _RedactingStream:
    def __init__(self, stream, secrets):
        self.stream, self.secrets = stream, secrets

    def write(self, text):
        return self.stream.write(redact(text, self.secrets))

    def flush(self):
        self.stream.flush()
