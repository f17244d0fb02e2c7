"""Leak reports revoke live matching tokens, audit them, and answer counts only."""

import pytest
import sqlalchemy as sa

from models import AuditEvent
from services import leaks, tokens
from services.errors import ValidationFailed
from tests.conftest import owner_actor


def test_reported_live_token_is_revoked_audited_and_flags_the_org(db, make_org, make_token):
    org = make_org()
    token, secret = make_token(org, environment="production")
    report = leaks.report_leaks([secret], ip="203.0.113.9", user_agent="scanner/1")
    db.session.commit()
    assert report == leaks.LeakReport(received=1, revoked=1)
    db.session.refresh(token)
    db.session.refresh(org)
    assert token.status == "revoked" and token.revoked_reason == "leaked"
    assert org.leak_alert_at is not None
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "token.revoked"))
    assert event.actor_label == "leak report" and event.details == {"reason": "leaked"}
    assert event.ip == "203.0.113.9" and event.environment == "production"


def test_unknown_wrong_and_already_revoked_strings_count_but_revoke_nothing(
    db, make_org, make_token
):
    org = make_org()
    live, live_secret = make_token(org)
    gone, gone_secret = make_token(org)
    tokens.revoke_token(gone, owner_actor(org))
    db.session.commit()
    # Same id as a real token, other random part (with a valid checksum): not a match.
    from services import secrets as token_secrets

    forged = token_secrets.new_secret("sandbox", live.id)
    unknown = token_secrets.new_secret("sandbox", token_secrets.new_token_id())
    report = leaks.report_leaks([forged, unknown, gone_secret, gone_secret])
    db.session.commit()
    assert report == leaks.LeakReport(received=4, revoked=0)
    db.session.refresh(live)
    assert live.status == "active"


def test_previous_secret_within_grace_is_revoked_too(db, make_org, make_token):
    org = make_org()
    token, old_secret = make_token(org)
    tokens.rotate_token(token, owner_actor(org), grace_seconds=3600)
    db.session.commit()
    assert leaks.report_leaks([old_secret]).revoked == 1


@pytest.mark.parametrize(
    "payload",
    [None, "ks_x", [], [1], ["not a token"], ["ks_prod_x"], ["a" * 5000], ["x"] * 101],
)
def test_malformed_reports_are_refused_and_change_nothing(db, make_org, make_token, payload):
    org = make_org()
    token, _ = make_token(org)
    with pytest.raises(ValidationFailed):
        leaks.report_leaks(payload)
    db.session.rollback()
    db.session.refresh(token)
    assert token.status == "active"
