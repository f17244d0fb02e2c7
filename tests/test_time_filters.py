"""Pages show times relative, with the exact UTC time in a title (STYLE.md)."""

from datetime import timedelta

from blueprints.web import _exact, _iso, _relative
from models import utcnow


def test_relative_rounds_the_future_and_floors_the_past():
    now = utcnow()
    assert _relative(now + timedelta(days=90) - timedelta(seconds=2)) == "in 90 days"
    assert _relative(now - timedelta(days=1, hours=23)) == "1 day ago"
    assert _relative(now - timedelta(minutes=3, seconds=10)) == "3 minutes ago"
    assert _relative(now - timedelta(seconds=5)) == "just now"
    assert _relative(None) == ""


def test_iso_and_exact_are_utc():
    value = utcnow().replace(year=2026, month=1, day=2, hour=3, minute=4, second=5)
    assert _iso(value) == "2026-01-02T03:04:05Z"
    assert _exact(value) == "2026-01-02 03:04:05 UTC"
