"""No secret in any log (issue 14): a whole run against gunicorn, with the Makefile's access
log format and the debug error log, then every secret seen on the way is grepped for."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import requests
from hot_path_support import gunicorn

from services.log_redaction import RedactSecrets, redact

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE_FORMAT = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)sB %(M)sms'
PASSWORD = "correct horse battery"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"|"X-CSRFToken": "([^"]+)"', html)
    return match.group(1) or match.group(2)


def _post(browser: requests.Session, base: str, path: str, data: dict, page: str | None = None):
    token = _csrf(browser.get(base + (page or path), timeout=10).text)
    return browser.post(base + path, data={**data, "csrf_token": token}, timeout=10)


def test_a_whole_run_logs_no_secret(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ks.db'}",
        "SECRET_KEY": "log-secrets-test",
        "BCRYPT_LOG_ROUNDS": "4",
    }
    env.pop("REDIS_URL", None)
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    seen: list[str] = []
    with gunicorn(
        env, "-w", "1", "--threads", "4", "--access-logfile", str(access),
        "--access-logformat", MAKEFILE_FORMAT, "--error-logfile", str(errors),
        "--log-level", "debug", "--capture-output", log_path=tmp_path / "server.log",
    ) as base:  # fmt: skip
        owner = requests.Session()
        made = _post(owner, base, "/signup", {"name": "Ada", "email": "ada@example.com",
                     "password": PASSWORD, "organization": "Engines"})  # fmt: skip
        assert made.status_code == 200 and "/connections/api-tokens" in made.url
        seen.append(owner.cookies["ks_session"])

        invited = _post(owner, base, "/settings/members",
                        {"email": "bob@example.com", "role": "admin"})  # fmt: skip
        link = re.search(r'<code id="invite-link">([^<]+)</code>', invited.text).group(1)
        invite_path = urllib.parse.urlsplit(link).path
        seen.append(invite_path.rsplit("/", 1)[1])

        created = _post(owner, base, "/connections/api-tokens",
                        {"name": "deploy", "environment": "sandbox", "role": "viewer",
                         "type": "generic", "expires_in_days": "30"})  # fmt: skip
        secret = re.search(r"ks_sbx_[0-9A-Za-z_]+", created.text).group(0)
        seen.append(secret)

        bob = requests.Session()
        joined = _post(bob, base, invite_path, {"name": "Bob", "password": PASSWORD})
        assert joined.status_code == 200
        seen.append(bob.cookies["ks_session"])
        bob.get(f"{base}{invite_path}?again=1", timeout=10)  # a used link, requested again
        bob.get(f"{base}/api/v1/whoami?token={secret}", timeout=10)

        reset = subprocess.run(
            [*flask, "keysmith", "reset-password", "bob@example.com"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        reset_path = urllib.parse.urlsplit(reset.stdout.strip()).path
        seen.append(reset_path.rsplit("/", 1)[1])
        stranger = requests.Session()
        done = _post(stranger, base, reset_path,
                     {"new_password": "a fresh long passphrase",
                      "confirm_password": "a fresh long passphrase"})  # fmt: skip
        assert done.status_code == 200 and done.url.endswith("/login")
        stranger.get(f"{base}{reset_path}", timeout=10)  # used: 404, still not logged

    logs = access.read_text() + errors.read_text()
    assert "/invites/[REDACTED]" in logs and "/reset-password/[REDACTED]" in logs
    for value in seen:
        assert len(value) >= 20
        assert value not in logs, "a secret reached a log"


def test_app_loggers_redact_links_in_their_messages(app):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = Keep()
    for logger in (app.logger, logging.getLogger("werkzeug")):
        assert any(isinstance(f, RedactSecrets) for f in logger.filters)
        was_disabled, logger.disabled = logger.disabled, False  # Alembic's fileConfig
        logger.addHandler(keep)
        try:
            logger.warning("Database refused a value on %s %s", "POST", "/invites/s3cr3t-link")
        finally:
            logger.removeHandler(keep)
            logger.disabled = was_disabled
    messages = [r.getMessage() for r in records]
    assert messages == ["Database refused a value on POST /invites/[REDACTED]"] * 2


def test_redact_leaves_ordinary_lines_alone_and_catches_cookies():
    assert redact('"GET /connections/api-tokens" 200') == '"GET /connections/api-tokens" 200'
    assert redact("Cookie: ks_session=abcdefgh; ks_last_org=3") == (
        "Cookie: ks_session=[REDACTED]; ks_last_org=3"
    )
    assert redact("/INVITES/Secret?x=1") == "/INVITES/[REDACTED]?x=1"


def test_a_request_s_text_in_a_log_record_stays_on_one_line():
    """The app's and gunicorn's error logs log request paths (a database outage, an
    unhandled error): a newline a client put in the path must not start a forged line."""
    import logging

    from services.log_redaction import RedactSecrets

    record = logging.LogRecord(
        "keysmith", logging.ERROR, __file__, 1, "Unhandled error on %s %s",
        ("GET", "/a\n2026-12-02 [CRITICAL] forged\x00"), None,
    )  # fmt: skip
    RedactSecrets().filter(record)
    message = record.getMessage()
    assert "\n" not in message and "\x00" not in message
    assert message == "Unhandled error on GET /a\\x0a2026-12-02 [CRITICAL] forged\\x00"
