"""Issue 8's pages in Chromium: "I found this token", hygiene badges and filters, the IP
allowlist, the leak banner; with htmx and without JavaScript."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from services.secrets import TOKEN_PATTERN
from tests.browser.conftest import PASSWORD, ROOT, sign_up, unique_email

PAGE = "/connections/api-tokens"


def row_of(page, name):
    return page.locator("tr.token-row", has=page.get_by_role("link", name=name, exact=True))


def create_token(page, name, *, expiry="90", date=None, allowed_ips=None) -> str:
    """Create a token through the inline form; returns its secret."""
    if page.locator("#add-form").count() == 0:
        page.get_by_role("link", name="+ Add").first.click()
    form = page.locator("#add-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Expires").select_option(expiry)
    if date:
        form.get_by_label("Expiry date").fill(date)
    if allowed_ips:
        form.get_by_label("Allowed IPs").fill(allowed_ips)
    form.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(secret)
    page.get_by_role("link", name="I have stored it").click()
    return secret


def search(page, text):
    # After a plain form post the new page may be on screen before htmx has bound the box's
    # input trigger (it starts on DOMContentLoaded); typing earlier would go unheard.
    page.wait_for_load_state()
    page.get_by_label("Find a token").fill(text)


def _sql(live_server, statement: str, *params) -> None:
    database = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(statement, params)


def _run_python(live_server, code: str) -> str:
    """Run Python in the app's context, against the live server's database."""
    script = (
        "from app import create_app\nfrom extensions import db\n"
        f"app = create_app()\nwith app.app_context():\n{code}"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=live_server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _another_organizations_secret(live_server) -> str:
    email = unique_email("other")
    out = live_server.flask(
        "keysmith", "create-user", email, "Other Org", "--password", PASSWORD
    ).stdout
    org_id = re.search(r"owner of organization (\d+)", out).group(1)
    secret = live_server.flask(
        "keysmith", "tokens", "create", "--org", org_id, "--name", "Their token"
    ).stdout.strip()
    assert TOKEN_PATTERN.fullmatch(secret)
    return secret


def test_i_found_this_token_with_htmx(page, shot, live_server):
    sign_up(page)
    page.goto(PAGE)
    leaked = create_token(page, "Deploy bot")
    create_token(page, "Billing sync")
    create_token(page, "Nightly CI export")
    page.evaluate("window.stillThisPage = true")  # gone if anything reloads the page

    # Live filtering: by name, any case; the URL follows, so the view can be bookmarked.
    search(page, "BILL")
    expect(row_of(page, "Deploy bot")).to_have_count(0)
    expect(row_of(page, "Billing sync")).to_be_visible()
    expect(page.locator("main").get_by_text("1 token matches “BILL”")).to_be_visible()
    expect(page).to_have_url(re.compile(r"q=BILL"))
    shot(page, "filtered")

    # A whole secret: which token it is, and never the secret in the address bar.
    search(page, leaked)
    lookup = page.locator("#token-lookup")
    expect(lookup).to_contain_text("This is the secret of “Deploy bot”")
    _, tag, token_id, _ = leaked.split("_")
    prefix = f"ks_{tag}_{token_id[:8]}"
    expect(page).to_have_url(re.compile(rf"q={prefix}$"))
    assert leaked not in page.url
    assert page.evaluate("window.stillThisPage") is True
    shot(page, "found")

    # Another organization's secret says nothing about that token.
    theirs = _another_organizations_secret(live_server)
    search(page, theirs)
    expect(lookup).to_contain_text("No token of this organization matches")
    expect(page.get_by_text("Their token")).to_have_count(0)
    shot(page, "other-org")

    # A mistyped secret is refused by its checksum.
    search(page, leaked[:-1] + ("A" if leaked[-1] != "A" else "B"))
    expect(lookup).to_contain_text("Not a valid Keysmith secret")

    # Overlong input: a clear error beside the box, and the whole list.
    search(page, "x" * 250)
    expect(page.locator("main").get_by_text("Search for at most 200 characters")).to_be_visible()
    expect(row_of(page, "Deploy bot")).to_be_visible()
    shot(page, "overlong")

    # The prefix as the list shows it, then a one-click revoke with confirmation.
    search(page, f"{prefix}…")
    expect(lookup).to_contain_text("This prefix is “Deploy bot”")
    lookup.get_by_text("Revoke “Deploy bot”…").click()
    expect(lookup.get_by_text("This cannot be undone")).to_be_visible()
    shot(page, "revoke-confirm")
    lookup.get_by_role("button", name="Revoke token").click()
    expect(page.locator("main").get_by_text("Revoked “Deploy bot”")).to_be_visible()
    search(page, leaked)
    expect(page.locator("#token-lookup")).to_contain_text("It is revoked")
    shot(page, "revoked")


@pytest.fixture
def nojs_page(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def test_search_and_filters_without_javascript(nojs_page, shot, live_server):
    page = nojs_page
    sign_up(page)
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").click()
    secret = create_token(page, "Deploy bot")
    page.get_by_role("link", name="+ Add").click()
    create_token(page, "Billing sync")
    _sql(
        live_server,
        "UPDATE api_tokens SET created_at = ? WHERE name = 'Billing sync'",
        (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S.%f"),
    )

    search(page, "deploy")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"q=deploy"))
    expect(row_of(page, "Billing sync")).to_have_count(0)
    expect(row_of(page, "Deploy bot")).to_be_visible()
    shot(page, "filtered")

    page.get_by_role("link", name="Clear").click()
    chips = page.get_by_role("navigation", name="Hygiene filter")
    chips.get_by_role("link", name=re.compile(r"^Unused")).click()
    expect(page).to_have_url(re.compile(r"filter=unused"))
    expect(row_of(page, "Deploy bot")).to_have_count(0)
    expect(row_of(page, "Billing sync")).to_be_visible()
    shot(page, "unused-filter")

    search(page, secret)
    page.get_by_role("button", name="Search").click()
    lookup = page.locator("#token-lookup")
    expect(lookup).to_contain_text("This is the secret of “Deploy bot”")
    assert secret not in page.content()
    lookup.get_by_text("Revoke “Deploy bot”…").click()
    lookup.get_by_role("button", name="Revoke token").click()
    expect(page.locator("main").get_by_text("Revoked “Deploy bot”")).to_be_visible()
    shot(page, "revoked")


def test_hygiene_badges_filters_and_rotate_from_a_badge(page, shot, live_server):
    sign_up(page)
    page.goto(PAGE)
    soon = (datetime.now(UTC) + timedelta(days=4)).date().isoformat()
    create_token(page, "Expiring key", expiry="custom", date=soon)
    create_token(page, "Forgotten key")
    create_token(page, "Busy key")
    long_ago = (datetime.now(UTC) - timedelta(days=45)).strftime("%Y-%m-%d %H:%M:%S.%f")
    _sql(live_server, "UPDATE api_tokens SET created_at = ? WHERE name = 'Forgotten key'", long_ago)
    page.reload()

    expect(
        row_of(page, "Expiring key").get_by_role("link", name=re.compile("Expires soon"))
    ).to_be_visible()
    expect(
        row_of(page, "Forgotten key").get_by_role("link", name=re.compile("Unused"))
    ).to_be_visible()
    expect(row_of(page, "Busy key").locator(".badge.hygiene")).to_have_count(0)
    shot(page, "badges")

    chips = page.get_by_role("navigation", name="Hygiene filter")
    chips.get_by_role("link", name="Expires soon 1").click()
    expect(row_of(page, "Busy key")).to_have_count(0)
    expect(row_of(page, "Expiring key")).to_be_visible()
    expect(page).to_have_url(re.compile(r"filter=expiring"))
    shot(page, "expiring-filter")

    # Searching keeps the filter (its hidden input is swapped with the chips).
    search(page, "busy")
    expect(page.locator("main").get_by_text("No sandbox tokens match")).to_be_visible()
    search(page, "EXPIRING")
    expect(row_of(page, "Expiring key")).to_be_visible()

    row_of(page, "Expiring key").get_by_role("link", name=re.compile("Expires soon")).click()
    form = page.locator("#rotate-form")
    expect(form).to_contain_text("Rotate “Expiring key”")
    expect(form.get_by_label("Old secret keeps working for")).to_have_value("86400")
    shot(page, "rotate-from-badge")
    form.get_by_role("button", name="Rotate secret").click()
    expect(page.locator("main").get_by_text("New secret for “Expiring key”")).to_be_visible()
    expect(
        page.locator("main").get_by_text("The previous secret keeps working until")
    ).to_be_visible()
    # The region lists every token again, and the search box says so by being empty.
    expect(page.get_by_label("Find a token")).to_have_value("")
    expect(page.get_by_role("link", name="All", exact=True)).to_have_attribute(
        "aria-current", "true"
    )
    shot(page, "rotated")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{PAGE}?filter=unused")
    expect(row_of(page, "Forgotten key")).to_be_visible()
    shot(page, "phone")


def test_ip_allowlist_on_the_token_page(page, shot):
    sign_up(page)
    page.goto(PAGE)
    create_token(page, "Office only", allowed_ips="203.0.113.0/24")
    page.get_by_role("link", name="Office only").click()
    section = page.locator("#allowlist")
    expect(section.get_by_role("listitem")).to_have_text(["203.0.113.0/24"])
    expect(section).to_contain_text("Last used from: not used yet")
    shot(page, "allowlist")

    page.evaluate("window.stillThisPage = true")
    box = section.get_by_label("Allowed IPs")
    box.fill("203.0.113.0/24\n10.0.0.300/8")
    section.get_by_role("button", name="Save allowlist").click()
    expect(
        section.get_by_text("'10.0.0.300/8' is not an IP address or CIDR range.")
    ).to_be_visible()
    expect(section.get_by_label("Allowed IPs")).to_have_value("203.0.113.0/24\n10.0.0.300/8")
    expect(section.locator("li")).to_have_count(1)  # nothing changed
    shot(page, "allowlist-error")

    section.get_by_label("Allowed IPs").fill("203.0.113.0/24\n10.0.0.0/8, 2001:db8::/32")
    section.get_by_role("button", name="Save allowlist").click()
    expect(section.get_by_text("IP allowlist saved.")).to_be_visible()
    expect(section.locator("li")).to_have_count(3)
    assert page.evaluate("window.stillThisPage") is True
    page.reload()
    expect(page.locator("main").get_by_text("token.updated")).to_be_visible()
    shot(page, "allowlist-saved")


def test_leak_banner_appears_and_an_owner_dismisses_it(page, shot, live_server):
    sign_up(page)
    page.goto(PAGE)
    secret = create_token(page, "Leaky key")
    expect(page.get_by_text("reported leaked")).to_have_count(0)
    out = _run_python(
        live_server,
        "    from services import leaks\n"
        f"    print(leaks.report_leaks([{secret!r}]).revoked)\n"
        "    db.session.commit()\n",
    )
    assert out.strip() == "1"
    page.goto(f"{PAGE}?environment=sandbox")
    banner = page.get_by_role("alert").filter(has_text="reported leaked and revoked")
    expect(banner).to_be_visible()
    shot(page, "banner")
    banner.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_text("reported leaked and revoked")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"/connections/api-tokens\?environment=sandbox$"))
    page.goto("/connections/audit-log")
    expect(page.get_by_role("cell", name="leak_alert.dismissed")).to_be_visible()
