"""The token list's polish in Chromium (issue 20, part 2): the hygiene badges open their fix,
the rows tell a rotation's grace and who revoked a token, and the table never scrolls
sideways at 1280, 1024 or 390 px with long names and every status."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, sign_up, unique_email
from tests.browser.test_teams_browser import invite
from tests.browser.test_tokens_browser import fill_create_form, open_actions, row_of

PAGE = "/connections/api-tokens?environment=sandbox"
LONG = "Quarterly revenue reconciliation between the billing system and the general ledger"


def _create(page, name: str) -> str:
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").first.click()
    fill_create_form(page, name).get_by_role("button", name="Create token").click()
    expect(page.locator("#new-secret")).to_be_visible()
    href = row_of(page, name).get_by_role("link", name=name, exact=True).get_attribute("href")
    return re.search(r"/api-tokens/([^/?]+)", href).group(1)


def _sideways(page) -> int:
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


def test_badges_notes_and_widths(page, shot, live_server):
    email = sign_up(page)
    page.goto(PAGE)
    # Before the first token: no search box and no "0" chips; + Add once.
    expect(page.locator("#token-search")).to_be_hidden()
    expect(page.locator(".filter-chips")).to_have_count(0)
    expect(page.get_by_role("link", name="+ Add")).to_have_count(1)
    shot(page, "no-tokens-1280")

    expiring = _create(page, LONG)
    unused = _create(page, "Forgotten cron")
    _create(page, "Paused")
    lapsed = _create(page, "Lapsed")
    database = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as db, db:
        db.execute(
            "UPDATE api_tokens SET expires_at = datetime('now', '+3 days') WHERE id = ?",
            (expiring,),
        )
        db.execute(
            "UPDATE api_tokens SET created_at = '2020-01-01 00:00:00.000000' WHERE id = ?",
            (unused,),
        )
        db.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE id = ?",
            (lapsed,),
        )
    page.goto(PAGE)
    expect(page.locator("#token-search")).to_be_visible()
    open_actions(page, "Paused").get_by_role("button", name="Suspend").click()
    expect(row_of(page, "Paused")).to_contain_text("Suspended")

    # "Expires soon · Renew" opens the rotate form above the list, with a new expiry offered.
    row_of(page, LONG).get_by_role("link", name=re.compile("Expires soon")).click()
    form = page.locator("#rotate-form")
    expect(form).to_contain_text(f"Rotate “{LONG}”")
    expect(form.get_by_label("Old secret keeps working for")).to_have_value("86400")
    expect(form.get_by_label("Expiry", exact=True)).to_be_visible()
    form.get_by_label("Old secret keeps working for").select_option("3600")
    form.get_by_role("button", name="Rotate secret").click()
    expect(page.locator("#new-secret")).to_be_visible()
    page.goto(PAGE)
    note = row_of(page, LONG).locator(".row-note.grace")
    expect(note).to_contain_text("Previous secret works until")

    # "Unused · Revoke…" opens the revoke confirmation; the revoked row says by whom.
    row_of(page, "Forgotten cron").get_by_role("link", name=re.compile("Unused")).click()
    expect(page.get_by_role("heading", name="Revoke “Forgotten cron”?")).to_be_visible()
    page.get_by_role("button", name="Revoke token").click()
    page.goto(PAGE)
    page.locator("#revoked-group > summary").click()
    revoked = row_of(page, "Forgotten cron").locator(".row-note")
    expect(revoked).to_contain_text("Revoked")
    expect(revoked).to_contain_text(f"by {email}")
    expect(row_of(page, "Lapsed").get_by_text("Expired", exact=True)).to_be_visible()

    for width, height in ((1280, 900), (1024, 768), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        expect(page.locator("#revoked-group")).to_have_attribute("open", "")
        assert _sideways(page) <= 0, f"scrolls sideways at {width} px"
        shot(page, f"list-{width}")
    page.emulate_media(color_scheme="dark")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        shot(page, f"list-{width}-dark")

    # The Actions menu opens fully inside the page at 1280 px (nothing clipped).
    page.set_viewport_size({"width": 1280, "height": 900})
    open_actions(page, "Paused")
    body = row_of(page, "Paused").locator(".menu-body")
    expect(body).to_be_visible()
    box = body.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1280
    assert _sideways(page) <= 0
    shot(page, "menu-1280")


def test_a_viewer_is_told_why_there_is_no_add(browser, page, live_server, shot):
    sign_up(page, organization="Viewable")
    _create(page, "Shared deploy")
    link = invite(page, unique_email("viewer"), "Viewer")
    other = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    guest = other.new_page()
    guest.set_default_timeout(10_000)
    guest.goto(link)
    guest.get_by_label("Your name").fill("Vera Viewer")
    guest.get_by_label("Password").fill(PASSWORD)
    guest.get_by_role("button", name="Create account and join").click()
    guest.wait_for_url("**/connections/api-tokens**")
    guest.goto(PAGE)
    expect(row_of(guest, "Shared deploy")).to_be_visible()
    expect(guest.get_by_role("link", name="+ Add")).to_have_count(0)
    hint = guest.locator(".tokens-toolbar .viewer-hint")
    expect(hint).to_contain_text("As a viewer you can see these tokens")
    expect(hint).to_contain_text("An owner or admin of Viewable can make you a member.")
    shot(guest, "viewer-1280")
    other.close()
