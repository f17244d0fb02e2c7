"""The id of the request being served (X-Request-Id), for the audit events it causes.

Set by blueprints/answer_headers.py around each request; read by services/audit.py, so no
service needs the request itself nor an extra argument on every call.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from contextvars import ContextVar

from services.log_redaction import redact

# A client's own id is kept when it looks like one: what log search and a ticket can carry.
SANE = re.compile(r"[A-Za-z0-9._:-]{1,200}")
# A secret with its underscores turned into another separator is still a secret.
_AS_UNDERSCORES = str.maketrans(".:-", "___")

_current: ContextVar[str | None] = ContextVar("keysmith_request_id", default=None)


def new_request_id() -> str:
    # Unique and unguessable without a system call per request (issue 17): a keyed hash of
    # a counter, under a key of the process's own, drawn again in each forked worker.
    number = next(_counter).to_bytes(8, "big")
    return "req_" + hashlib.blake2b(number, key=_key, digest_size=12).hexdigest()


_key = os.urandom(32)
_counter = itertools.count()


def _forked() -> None:
    global _key, _counter
    _key, _counter = os.urandom(32), itertools.count()


os.register_at_fork(after_in_child=_forked)


def chosen(client_value: str | None) -> str:
    """The client's X-Request-Id if it is sane, else a new one. Sane: at most 200 of
    A-Z a-z 0-9 . _ : - and nothing that looks like a secret (it is logged and stored)."""
    if client_value and SANE.fullmatch(client_value):
        plain = client_value.translate(_AS_UNDERSCORES)
        if redact(client_value) == client_value and redact(plain) == plain:
            return client_value
    return new_request_id()


def current() -> str | None:
    return _current.get()


def set_current(value: str | None):
    return _current.set(value)


def reset(token) -> None:
    _current.reset(token)
