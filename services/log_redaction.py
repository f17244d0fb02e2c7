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


def redact(text: str) -> str:
    if not any(marker in text.lower() for marker in _MARKERS):
        return text  # the common case: nothing to look for
    text = _SECRET_LIKE.sub("ks_[REDACTED]", text)
    text = _LINK_SECRET.sub(r"\1[REDACTED]", text)
    return _SESSION_ID.sub(r"\1[REDACTED]", text)


class RedactSecrets(logging.Filter):
    """A logging filter: the record's message, arguments merged in, with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
