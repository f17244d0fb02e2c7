"""Connections → API tokens in Chromium: the whole life of a token, with htmx and without JS."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from services.secrets import TOKEN_PATTERN
from tests.browser.conftest import sign_up

ENVIRONMENTS = ["sandbox", "production"]
TAGS = {"sandbox": "sbx", "production": "prod"}


def row_of(page, name):
    return page.locator("tr.token-row", has=page.get_by_role("link", name=name, exact=True))


def open_actions(page, name):
    row = row_of(page, name)
    row.get_by_label(f"Actions for {name}").click()
    return row


def rotate_from_menu(page, name, grace: str, *, opened: bool = False):
    """Actions → Rotate… opens the rotate form above the list (24 hours preselected), then
    rotates with `grace` seconds; "0" answers the form's question too."""
    row = row_of(page, name) if opened else open_actions(page, name)
    row.get_by_role("link", name=f"Rotate… “{name}”").click()
    form = page.locator("#rotate-form")
    select = form.get_by_label("Old secret keeps working for")
    expect(select).to_have_value("86400")
    select.select_option(grace)
    if grace == "0":
        form.get_by_label("Yes, stop the old secret now").check()
    form.get_by_role("button", name="Rotate secret").click()


def fill_create_form(page, name, *, scope="tokens:read"):
    form = page.locator("#add-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Access").select_option("writer")
    form.get_by_label("Type").select_option("ci")
    form.get_by_label("Expires").select_option("90")
    if scope:
        form.get_by_label(scope).check()
    return form


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_token_life_with_htmx(page, shot, environment):
    sign_up(page)
    page.goto(f"/connections/api-tokens?environment={environment}")
    expect(page.get_by_role("link", name=environment.capitalize())).to_have_attribute(
        "aria-current", "page"
    )
    expect(page.locator("main").get_by_text(f"No {environment} tokens yet")).to_be_visible()
    shot(page, "empty")
    page.evaluate("window.stillThisPage = true")  # gone if anything reloads the page

    page.get_by_role("link", name="+ Add").click()
    form = page.locator("#add-form")
    expect(form).to_be_visible()
    expect(page.get_by_text(f"No {environment} tokens yet")).to_be_hidden()  # the form replaces it
    shot(page, "add-form")

    # A server-side error swaps in (a 400) and keeps what was typed.
    fill_create_form(page, "Deploy bot")
    form.get_by_label("Expires").select_option("custom")
    form.get_by_label("Expiry date").fill("2001-01-01")
    form.get_by_role("button", name="Create token").click()
    expect(page.locator("main").get_by_text("The expiry must be in the future.")).to_be_visible()
    expect(page.locator("#add-form").get_by_label("Name", exact=True)).to_have_value("Deploy bot")
    expect(page.locator("#add-form").get_by_label("tokens:read")).to_be_checked()
    shot(page, "add-error")

    page.locator("#add-form").get_by_label("Expires").select_option("90")
    page.locator("#add-form").get_by_role("button", name="Create token").click()
    panel = page.locator("#secret-panel")
    expect(panel).to_contain_text("cannot be shown again")
    expect(panel).to_be_in_viewport()
    secret = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(secret) and secret.startswith(f"ks_{TAGS[environment]}_")
    expect(row_of(page, "Deploy bot")).to_contain_text("Writer")
    expect(row_of(page, "Deploy bot")).to_contain_text("tokens:read")
    expect(page.locator("#group-writer")).to_contain_text("Deploy bot")

    panel.get_by_role("button", name="Copy").click()
    expect(panel.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert page.evaluate("window.stillThisPage") is True
    shot(page, "created")

    page.reload()
    expect(row_of(page, "Deploy bot")).to_be_visible()
    expect(page.locator("#new-secret")).to_have_count(0)
    assert secret not in page.content()
    shot(page, "reloaded")
    page.evaluate("window.stillThisPage = true")

    open_actions(page, "Deploy bot")
    shot(page, "actions-menu")
    rotate_from_menu(page, "Deploy bot", "3600", opened=True)
    expect(
        page.locator("main").get_by_text("The previous secret keeps working until")
    ).to_be_visible()
    rotated = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(rotated) and rotated != secret
    shot(page, "rotated")

    row = open_actions(page, "Deploy bot")
    row.get_by_label("Name", exact=True).fill("Deploy bot 2")
    row.get_by_role("button", name="Rename").click()
    expect(row_of(page, "Deploy bot 2")).to_be_visible()

    row = open_actions(page, "Deploy bot 2")
    row.get_by_role("button", name="Suspend").click()
    expect(row_of(page, "Deploy bot 2").get_by_text("Suspended")).to_be_visible()
    shot(page, "suspended")

    row = open_actions(page, "Deploy bot 2")
    row.get_by_role("button", name="Resume").click()
    expect(row_of(page, "Deploy bot 2").get_by_text("Active")).to_be_visible()

    row = open_actions(page, "Deploy bot 2")
    row.get_by_text("Revoke…").click()
    expect(row.get_by_text("This cannot be undone")).to_be_visible()
    shot(page, "revoke-confirm")
    row.get_by_role("button", name="Revoke token").click()
    revoked = row_of(page, "Deploy bot 2")
    expect(revoked.get_by_text("Revoked", exact=True)).to_be_visible()
    expect(revoked.get_by_label("Actions for Deploy bot 2")).to_have_count(0)
    # The rotated secret still on screen belonged to it: its panel closes, the count follows.
    expect(page.locator("#secret-panel.secret-panel")).to_have_count(0)
    expect(page.locator("#live-count")).to_have_text(f"0 live tokens in {environment}")
    assert page.evaluate("window.stillThisPage") is True
    shot(page, "revoked")

    page.reload()
    expect(page.get_by_text(f"No {environment} tokens yet")).to_be_hidden()
    revoked_group = page.locator("#revoked-group")
    expect(revoked_group.get_by_text("Deploy bot 2")).to_be_hidden()  # collapsed
    revoked_group.locator("summary").click()
    expect(revoked_group.get_by_text("Deploy bot 2")).to_be_visible()
    shot(page, "revoked-group")

    other = "production" if environment == "sandbox" else "sandbox"
    page.get_by_role("link", name=other.capitalize()).click()
    expect(page.locator("main").get_by_text(f"No {other} tokens yet")).to_be_visible()


@pytest.fixture
def nojs_page(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_token_life_without_javascript(nojs_page, shot, environment):
    page = nojs_page
    sign_up(page)
    page.goto(f"/connections/api-tokens?environment={environment}")
    page.get_by_role("link", name="+ Add").click()
    expect(page).to_have_url(re.compile(r"/connections/api-tokens/new\?environment="))
    shot(page, "add-page")

    fill_create_form(page, "Nightly job", scope=None)
    page.locator("#add-form").get_by_role("button", name="Create token").click()
    secret = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(secret) and secret.startswith(f"ks_{TAGS[environment]}_")
    expect(page.locator("main").get_by_text("cannot be shown again")).to_be_visible()
    shot(page, "created")

    # The same name again: the form comes back with the error and what was typed.
    page.get_by_role("link", name="+ Add").click()
    fill_create_form(page, "Nightly job", scope=None)
    page.locator("#add-form").get_by_role("button", name="Create token").click()
    expect(page.locator("main").get_by_text("already exists")).to_be_visible()
    expect(page.locator("#add-form").get_by_label("Name", exact=True)).to_have_value("Nightly job")
    shot(page, "duplicate")

    page.goto(f"/connections/api-tokens?environment={environment}")
    assert secret not in page.content()

    rotate_from_menu(page, "Nightly job", "86400")
    rotated = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(rotated) and rotated != secret
    shot(page, "rotated")

    row = open_actions(page, "Nightly job")
    row.get_by_role("button", name="Suspend").click()
    expect(page.locator("main").get_by_text("Suspended “Nightly job”")).to_be_visible()
    expect(row_of(page, "Nightly job").get_by_text("Suspended", exact=True)).to_be_visible()

    row = open_actions(page, "Nightly job")
    row.get_by_role("button", name="Resume").click()
    expect(row_of(page, "Nightly job").get_by_text("Active", exact=True)).to_be_visible()

    row = open_actions(page, "Nightly job")
    row.get_by_text("Revoke…").click()
    row.get_by_role("button", name="Revoke token").click()
    expect(page.locator("main").get_by_text("Revoked “Nightly job”")).to_be_visible()
    shot(page, "revoked")

    # The token's own page works without JavaScript too.
    page.locator("#revoked-group summary").click()
    page.get_by_role("link", name="Nightly job").click()
    expect(page.get_by_role("heading", name="Nightly job")).to_be_visible()
    expect(page.locator("main").get_by_text("token.revoked")).to_be_visible()
    shot(page, "token-page")


def _add_usage(live_server, token_id: str, counts: dict[int, int]) -> None:
    """Requests per day as the usage roll-up would have written them (days ago → count)."""
    database = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    today = datetime.now(UTC).date()
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.executemany(
            "INSERT INTO token_usage (token_id, day, count) VALUES (?, ?, ?)",
            [(token_id, (today - timedelta(days=d)).isoformat(), n) for d, n in counts.items()],
        )


def test_token_page_and_phone_width(page, shot, live_server):
    sign_up(page)
    page.goto("/connections/api-tokens")
    page.get_by_role("link", name="+ Add").click()
    for name, role in (("Admin key", "admin"), ("Read-only dashboard", "viewer")):
        form = page.locator("#add-form")
        form.get_by_label("Name", exact=True).fill(name)
        form.get_by_label("Access").select_option(role)
        if role == "viewer":
            form.get_by_label("audit:read").check()
        form.get_by_role("button", name="Create token").click()
        expect(page.locator("#new-secret")).to_be_visible()
        if role == "admin":
            page.get_by_role("link", name="+ Add").click()
    shot(page, "two-groups")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/connections/api-tokens")
    shot(page, "phone")
    open_actions(page, "Admin key")
    shot(page, "phone-actions")
    page.get_by_role("link", name="+ Add").click()
    shot(page, "phone-add")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/connections/api-tokens")
    page.get_by_role("link", name="Admin key").click()
    expect(page.get_by_role("heading", name="Admin key")).to_be_visible()
    token_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    _add_usage(live_server, token_id, {0: 120, 1: 80, 2: 95, 5: 30, 12: 200, 29: 7})
    page.reload()
    expect(page.locator("svg.usage-chart rect")).to_have_count(30)
    expect(page.locator("main").get_by_text("last 30 days · 532 in all")).to_be_visible()
    expect(page.locator("main").get_by_text("token.created")).to_be_visible()
    shot(page, "token-page")
