"""Last used (time, IP) and requests per day, without a database write per request.

Interface used by the API's authentication: `record_use(token, ip)` after a token is
verified. The buffering and flushing (per worker, or in Redis) land with the hot-path
work (issue 7); until then this writes nothing.
"""

from __future__ import annotations

from models import ApiToken


def record_use(token: ApiToken, ip: str | None) -> None:
    """Note one authenticated request of this token (buffered; never a write per call)."""
    return None
