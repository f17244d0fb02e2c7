"""Rotation in Chromium (issue 20, SPEC §2): "None" from the list's Actions menu asks before
it stops the old secret; an expired token is renewed with a new expiry, not "rotated"."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

from playwright.sync_api import expect

from services.secrets import TOKEN_PATTERN
from tests.browser.conftest import sign_up
from tests.browser.test_tokens_browser import fill_create_form, open_actions, row_of

PAGE = "/connections/api-tokens?environment=sandbox"


def _create(page, name: str) -> str:
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").first.click()
    fill_create_form(page, name, scope=None).get_by_role("button", name="Create token").click()
    return page.locator("#new-secret").inner_text().strip()


def test_none_from_the_actions_menu_asks_first(page, shot):
    sign_up(page)
    first = _create(page, "Ask first")
    page.goto(PAGE)
    # Actions → Rotate… opens the rotate form above the list, on 24 hours (issue 20).
    row = open_actions(page, "Ask first")
    row.get_by_role("link", name="Rotate… “Ask first”").click()
    form = page.locator("#rotate-form")
    grace = form.get_by_label("Old secret keeps working for")
    expect(grace).to_have_value("86400")
    expect(grace).to_be_focused()
    grace.select_option("0")
    form.get_by_role("button", name="Rotate secret").click()

    expect(form).to_contain_text("stops the old secret at once")
    expect(page.locator("#new-secret")).to_have_count(0)  # nothing rotated yet
    checkbox = form.get_by_label("Yes, stop the old secret now")
    expect(checkbox).to_be_focused()
    expect(form.get_by_label("Old secret keeps working for")).to_have_value("0")
    shot(page, "question-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "question-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Choosing a grace instead hides the question; back to None shows it again.
    form.get_by_label("Old secret keeps working for").select_option("3600")
    form.get_by_label("Old secret keeps working for").select_option("0")
    checkbox.check()
    form.get_by_role("button", name="Rotate secret").click()
    panel = page.locator("#secret-panel")
    expect(panel).to_contain_text("The previous secret no longer works.")
    expect(panel).to_be_focused()
    rotated = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(rotated) and rotated != first


def test_an_expired_token_is_renewed_with_a_new_expiry(page, shot, live_server):
    sign_up(page)
    _create(page, "Lapsed")
    page.goto(PAGE)
    href = row_of(page, "Lapsed").get_by_role("link", name="Lapsed").get_attribute("href")
    token_id = re.search(r"/api-tokens/([^/?]+)", href).group(1)
    database = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as db, db:
        db.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE id = ?",
            (token_id,),
        )

    # The Actions menu says Renew… for an expired token, and opens the renewal form.
    page.goto(PAGE)
    row = open_actions(page, "Lapsed")
    expect(row.get_by_role("link", name="Rotate… “Lapsed”")).to_have_count(0)
    row.get_by_role("link", name="Renew… “Lapsed”").click()
    form = page.locator("#rotate-form")
    expect(form).to_contain_text("Renew “Lapsed”")
    expect(form).to_contain_text("It expired")
    expect(form.get_by_label("Old secret keeps working for")).to_have_count(0)
    expect(form.get_by_label("Expiry", exact=True)).to_be_focused()
    shot(page, "renew-1280")
    form.get_by_label("Expiry", exact=True).select_option("30")
    form.get_by_role("button", name="Renew token").click()

    panel = page.locator("#secret-panel")
    expect(panel).to_contain_text("Renewed: it now expires on")
    expect(panel).to_contain_text("The expired secret stays unusable.")
    expect(panel).not_to_contain_text("keeps working")
    expect(row_of(page, "Lapsed")).to_contain_text("in 30 days")
    expect(row_of(page, "Lapsed")).to_contain_text("Active")
    shot(page, "renewed-1280")

    # The token's own page, on a phone, in dark mode: the Rotate page says "Renew" no more.
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/connections/api-tokens/{token_id}/rotate")
    expect(page.get_by_role("heading", name="Rotate “Lapsed”")).to_be_visible()
    shot(page, "rotate-390-dark")
