"""axe-core on every page of the console (issue 20): at 1280 px and 390 px, light and dark,
no serious or critical violation, and no page scrolls sideways.

axe-core comes from npm (tests/browser/axe/package.json, installed by `.ci/run` with
`npm ci`); it is injected into each page through Playwright and run there."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from hot_path_support import gunicorn
from playwright.sync_api import expect

from tests.browser.conftest import (
    PASSWORD,
    ROOT,
    SCREENSHOTS,
    LiveServer,
    save_screenshot,
    sign_in,
    sign_up,
    unique_email,
)

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# Each width, and the color schemes checked at it: each page is loaded once a width and
# checked in each scheme (switched in place, as a person's system setting would).
LAYOUTS = {
    "1280": ({"width": 1280, "height": 900}, ("light", "dark")),
    "1024": ({"width": 1024, "height": 768}, ("light",)),
    "390": ({"width": 390, "height": 844}, ("light", "dark")),
}
LONG_NAME = "Nightly metrics export to the data warehouse for the finance team's reports"

pytestmark = pytest.mark.skipif(
    not AXE.exists(),
    reason="axe-core is not installed: run `npm ci --prefix tests/browser/axe` (.ci/run does)",
)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """Its own server, so webhook endpoints on loopback are allowed (none is ever called)."""
    instance = tmp_path_factory.mktemp("axe-instance")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{instance / 'keysmith.db'}",
        "SECRET_KEY": "browser-test-secret",
        "BCRYPT_LOG_ROUNDS": "4",
        "SIGNUP_THROTTLE": "10000 per hour",
        "RATELIMIT_KEY_PREFIX": f"browser-{uuid.uuid4().hex[:8]}",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_ALLOW_HTTP": "true",
    }
    env.pop("REDIS_URL", None)
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    with gunicorn(env, "--workers", "1", "--threads", "4", log_path=instance / "server.log") as url:
        yield LiveServer(url, env)


@dataclass
class Console:
    """An organization with something on every page: tokens in every status (long names
    too), a second organization (the switcher), an invite, a webhook endpoint."""

    email: str
    token_id: str = ""
    expired_id: str = ""
    webhook_path: str = ""
    invite_link: str = ""
    two_factor_email: str = ""
    signed_in: list[tuple[str, str]] = field(default_factory=list)  # (screenshot name, path)
    signed_out: list[tuple[str, str]] = field(default_factory=list)


def _create(page, name: str, role: str = "writer", scope: str | None = None) -> None:
    page.get_by_role("link", name="+ Add").first.click()
    form = page.locator("#add-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Access").select_option(role)
    if scope:
        form.get_by_label(scope).check()
    form.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-secret")).to_be_visible()


def turn_on_two_factor(page) -> None:
    """Two-factor sign-in turned on by the signed-in person: the recovery codes page shows
    (once: it answers the form's post, so it is checked where it appears)."""
    page.goto("/settings/account/two-factor")
    page.get_by_text("Can't scan it?").click()
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()


def _row_action(page, name: str, button: str) -> None:
    row = page.locator("tr.token-row", has=page.get_by_role("link", name=name, exact=True))
    row.get_by_label(f"Actions for {name}").click()
    if not button:  # only open the menu
        return
    if button == "Revoke token":
        row.get_by_text("Revoke…").click()
        expect(row.get_by_text("This cannot be undone")).to_be_visible()
    row.get_by_role("button", name=button).click()


@pytest.fixture(scope="module")
def console(browser, live_server) -> Iterator[Console]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    email = sign_up(page, name="Ada Augusta King, Countess of Lovelace", organization="Engines")
    console = Console(email=email)
    page.goto("/connections/api-tokens?environment=sandbox")
    _create(page, "Deploy bot", scope="tokens:read")
    for name, role in [(LONG_NAME, "viewer"), ("Old integration", "writer"), ("Paused", "admin")]:
        page.goto("/connections/api-tokens?environment=sandbox")
        _create(page, name, role)
    page.goto("/connections/api-tokens?environment=sandbox")
    _create(page, "Retired", "viewer")
    page.goto("/connections/api-tokens?environment=sandbox")
    _row_action(page, "Paused", "Suspend")
    expect(page.locator("tr.status-inactive")).to_have_count(1)
    _row_action(page, "Retired", "Revoke token")
    expect(page.locator("tr.status-revoked")).to_have_count(1)
    # A rotation with a grace: the row's "Previous secret works until" note.
    _row_action(page, LONG_NAME, "")
    page.get_by_role("link", name=f"Rotate… “{LONG_NAME}”").click()
    page.locator("#rotate-form").get_by_label("Old secret keeps working for").select_option("3600")
    page.locator("#rotate-form").get_by_role("button", name="Rotate secret").click()
    expect(page.locator("#new-secret")).to_be_visible()
    page.goto("/connections/api-tokens?environment=sandbox")
    expect(page.locator(".row-note.grace")).to_have_count(1)
    ids = {}
    for name in ("Deploy bot", "Old integration"):
        link = page.get_by_role("link", name=name, exact=True)
        ids[name] = re.search(r"/api-tokens/([^/?]+)", link.get_attribute("href")).group(1)
    console.token_id, console.expired_id = ids["Deploy bot"], ids["Old integration"]
    database = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as db, db:
        db.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE id = ?",
            (console.expired_id,),
        )

    page.goto("/settings/members")
    page.get_by_label("Email").fill(unique_email("invitee"))
    page.get_by_label("Role", exact=True).select_option(label="Member")
    page.get_by_role("button", name="Create invite link").click()
    console.invite_link = page.locator("#invite-link").inner_text().strip()

    page.goto("/connections/webhooks")
    page.get_by_text("+ Add endpoint").click()
    page.locator("#add-endpoint-form").get_by_label("Endpoint URL").fill(
        "http://127.0.0.1:9/keysmith/hooks/with/a/rather/long/path/that/must/wrap"
    )
    page.locator("#add-endpoint-form").get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#new-secret")).to_be_visible()
    page.goto("/connections/webhooks")
    hook = page.locator("a[href^='/connections/webhooks/']").first
    console.webhook_path = hook.get_attribute("href")

    # A second organization, with the first current again: the switcher shows.
    page.goto("/organizations/new")
    page.get_by_label("Organization name").fill("Side Project")
    page.get_by_role("button", name="Create organization").click()
    page.locator("details.switcher summary").click()
    page.get_by_role("button", name=re.compile("Engines")).click()
    context.close()

    # Someone with two-factor sign-in on: the code step of sign-in, and recovery codes.
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console.two_factor_email = sign_up(page, name="Tess Factor", organization="Second")
    turn_on_two_factor(page)
    context.close()

    tokens = "/connections/api-tokens"
    console.signed_in = [
        ("tokens-sandbox", f"{tokens}?environment=sandbox"),
        ("tokens-production-empty", f"{tokens}?environment=production"),
        ("tokens-add-form", f"{tokens}/new?environment=sandbox"),
        ("token-page", f"{tokens}/{console.token_id}"),
        ("token-page-expired", f"{tokens}/{console.expired_id}"),
        ("rotate", f"{tokens}/{console.token_id}/rotate"),
        ("renew-expired", f"{tokens}/{console.expired_id}/rotate"),
        ("revoke-confirm", f"{tokens}/{console.token_id}/revoke"),
        ("audit-log", "/connections/audit-log"),
        ("webhooks", "/connections/webhooks"),
        ("webhook", console.webhook_path),
        ("members", "/settings/members"),
        ("policy", "/settings/policy"),
        ("account", "/settings/account"),
        ("password", "/settings/account/password"),
        ("two-factor-setup", "/settings/account/two-factor"),
        ("new-organization", "/organizations/new"),
        ("not-found", "/no-such-page"),
        ("invite-signed-in", console.invite_link),
    ]
    console.signed_out = [
        ("signup", "/signup"),
        ("login", "/login"),
        ("invite-new-person", console.invite_link),
        ("invite-gone", "/invites/not-a-real-invite"),
        ("not-found-signed-out", "/no-such-page"),
    ]
    yield console


def run_axe(page) -> list[dict]:
    """axe's serious and critical violations on the page (axe itself injected already)."""
    result = page.evaluate(
        """async () => {
          const r = await axe.run(document, {resultTypes: ["violations"]});
          return r.violations
            .filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 4).map(n => n.target.join(" ") + " :: "
                          + (n.failureSummary || "").split("\\n").slice(1, 2).join(""))}));
        }"""
    )
    return result


def sideways_overflow(page) -> int:
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


def _check(
    page, name: str, path: str | None, width: str, schemes: tuple[str, ...], problems: list[str]
) -> None:
    """axe and the sideways check on `path`, or on the page as it is (None), in each scheme."""
    if path is not None:
        assert page.goto(path) is not None
    path = path or page.url
    page.wait_for_load_state("networkidle")
    page.add_script_tag(path=str(AXE))
    for scheme in schemes:
        layout = f"{width}-{scheme}"
        page.emulate_media(color_scheme=scheme)
        save_screenshot(page, SCREENSHOTS / f"axe-{layout}-{name}.png")
        for violation in run_axe(page):
            problems.append(
                f"{path} [{layout}] {violation['id']} ({violation['impact']}): "
                f"{violation['help']}\n    " + "\n    ".join(violation["nodes"])
            )
        overflow = sideways_overflow(page)
        if overflow > 0:
            problems.append(f"{path} [{layout}] scrolls sideways by {overflow}px")


@pytest.mark.parametrize("width", list(LAYOUTS))
def test_no_serious_axe_violation_on_any_page(browser, live_server, console, width):
    viewport, schemes = LAYOUTS[width]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for signed_in, paths in ((False, console.signed_out), (True, console.signed_in)):
        # bypass_csp: our Content-Security-Policy (script-src 'self') refuses axe's script tag.
        context = browser.new_context(
            base_url=live_server.url, viewport=viewport, color_scheme=schemes[0], bypass_csp=True
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            if signed_in:
                sign_in(page, console.email, PASSWORD)
                page.wait_for_url("**/connections/api-tokens**")
            for name, path in paths:
                _check(page, name, path, width, schemes, problems)
            if not signed_in:
                # A failed sign-in, with its error; then the two-factor code step.
                page.goto("/login")
                page.get_by_label("Email").fill(console.email)
                page.get_by_label("Password").fill("not the password")
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("main").get_by_text("do not match")).to_be_visible()
                _check(page, "login-failed", None, width, schemes, problems)
                sign_in(page, console.two_factor_email, PASSWORD)
                page.wait_for_url("**/login/two-factor")
                _check(page, "two-factor-sign-in", None, width, schemes, problems)
                # Someone new turns two-factor sign-in on: the recovery codes, shown once.
                page.context.clear_cookies()
                sign_up(page, name="Rae Covery", organization=f"Codes {width}")
                turn_on_two_factor(page)
                _check(page, "recovery-codes", None, width, schemes, problems)
        finally:
            context.close()
    assert not problems, "\n" + "\n".join(problems)
