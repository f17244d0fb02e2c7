"""What never reaches a log line: token secrets, invite and password-reset links, session
ids. gunicorn.conf.py (access and error logs) and the app's own loggers use this; it
imports nothing of Keysmith, so gunicorn can load it before the app."""

from __future__ import annotations

import logging
import re

# Broader than the scanners' pattern: a truncated or mistyped secret is redacted too.
_SECRET_LIKE = re.compile(r"ks_(?:prod|sbx)_[0-9A-Za-z_%]+")
# The secret of an invite or reset link is its last path segment.
_LINK_SECRET = re.compile(r"(/(?:invites|reset-password)/)[^/?#\s\"']+", re.IGNORECASE)
# A session id, in a Cookie or Set-Cookie header someone chose to log.
_SESSION_ID = re.compile(r"((?:ks_session|session|remember_token)=)[^;,\s\"']+")
_MARKERS = ("ks_", "/invites/", "/reset-password/", "session=", "remember_token=")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """A client's text on one line: a newline (or any control character) in a path or
    header becomes `\\x0a`, so it cannot forge a log line of its own (attack review)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def clean(text: str) -> str:
    """What a log line may show of a client's text: redacted and on one line."""
    return escape_controls(redact(text))


def redact(text: str) -> str:
    if not any(marker in text.lower() for marker in _MARKERS):
        return text  # the common case: nothing to look for
    text = _SECRET_LIKE.sub("ks_[REDACTED]", text)
    text = _LINK_SECRET.sub(r"\1[REDACTED]", text)
    return _SESSION_ID.sub(r"\1[REDACTED]", text)


class RedactSecrets(logging.Filter):
    """A logging filter: the record's message, arguments merged in, with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The arguments are what a request brought (paths, names): each on one line. The
        # format string is ours and may span lines.
        if isinstance(record.args, tuple):
            record.args = tuple(
                escape_controls(a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.args, dict):
            record.args = {
                k: escape_controls(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
