"""Raw values become words on the pages (issue 20)."""

from __future__ import annotations

import pytest

from blueprints.labels import action_sentence, detail_lines, duration_words, rate_limit_words


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ("1000/minute;100/second", "1,000 a minute, bursts of 100 a second"),
        ("100/second;1000/minute", "1,000 a minute, bursts of 100 a second"),
        ("60/hour", "60 an hour"),
        ("5000 per 10 minutes", "5,000 every 10 minutes"),
        ("nonsense", "nonsense"),
    ],
)
def test_rate_limits_read_as_words(limit, words):
    assert rate_limit_words(limit) == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "none"), (3600, "1 hour"), (86400, "24 hours"), (604800, "7 days"), (90, "90 seconds")],
)
def test_durations_read_as_words(seconds, words):
    assert duration_words(seconds) == words


def test_audit_details_read_as_words_and_the_code_stays_for_filters():
    assert action_sentence("token.rotated") == "Rotated a token’s secret"
    assert action_sentence("token.brand_new") == "Token: brand new"
    lines = dict(
        detail_lines(
            {
                "grace_period_seconds": 86400,
                "scopes": {"from": [], "to": ["tokens:read"]},
                "expires_at": {"from": "2026-01-01T00:00:00Z", "to": None},
                "rate_limit": {"from": None, "to": "1000/minute;100/second"},
            }
        )
    )
    assert lines["Old secret kept working for"] == "24 hours"
    assert lines["Scopes"] == "none (all the role allows) → tokens:read"
    assert lines["Expiry"] == "2026-01-01 00:00 UTC → never"
    default = "the key policy’s default"
    assert lines["Rate limit"] == f"{default} → 1,000 a minute, bursts of 100 a second"
