"""Browser tests: the real server (gunicorn) on a free port, driven by Playwright in
Debian's Chromium. Screenshots go to test-artifacts/screenshots/ (not committed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hot_path_support import gunicorn

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.browser


class LiveServer:
    def __init__(self, url: str, env: dict[str, str]):
        self.url = url
        self.env = env

    def flask(self, *args: str) -> subprocess.CompletedProcess:
        """Run a `flask --app app ...` command against the same database."""
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """gunicorn serving a freshly migrated SQLite database, as `make run` would."""
    instance = tmp_path_factory.mktemp("live-instance")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{instance / 'keysmith.db'}",
        "SECRET_KEY": "browser-test-secret",
        "BCRYPT_LOG_ROUNDS": "4",
        "SIGNUP_THROTTLE": "10000 per hour",  # every browser test signs up from 127.0.0.1
        "RATELIMIT_KEY_PREFIX": f"browser-{uuid.uuid4().hex[:8]}",
    }
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    with gunicorn(env, "--workers", "1", "--threads", "4", log_path=instance / "server.log") as url:
        yield LiveServer(url, env)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page


@pytest.fixture
def shot(request):
    """Save a full-page screenshot named after the test and a step, to look at."""

    def take(page, step: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{step}.png".replace("/", "_")
        save_screenshot(page, path)
        return path

    return take


def save_screenshot(page, path: Path, *, full_page: bool = True) -> None:
    """A screenshot to look at (test-artifacts/screenshots, never committed), unless
    KEYSMITH_SCREENSHOTS=0: `.ci/run` sets it, since nobody looks at a CI run's pictures and
    rendering them was a few percent of the suite's time. No test asserts on one."""
    if os.environ.get("KEYSMITH_SCREENSHOTS", "1") == "0":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def sign_up(
    page,
    *,
    email: str | None = None,
    name: str = "Ada Lovelace",
    organization: str = "Analytical Engines",
) -> str:
    """Sign up through the form, as a person would; returns the email."""
    email = email or unique_email()
    page.goto("/signup")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Work email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Organization").fill(organization)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/connections/api-tokens**")
    return email


def sign_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
