"""A token's own page offers Rotate and Revoke, and rotating from it shows the new secret."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import sign_up
from tests.browser.test_tokens_browser import fill_create_form

PAGE = "/connections/api-tokens"


def test_rotate_from_the_tokens_own_page(page, shot):
    sign_up(page)
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").first.click()
    fill_create_form(page, "Page rotate").get_by_role("button", name="Create token").click()
    old = page.locator("#secret-panel code").inner_text().strip()
    page.get_by_role("link", name="Page rotate", exact=True).click()
    page.get_by_role("link", name="Rotate…").click()
    page.get_by_label("Old secret keeps working for").select_option("3600")
    shot(page, "rotate-page")
    page.get_by_role("button", name="Rotate").click()
    panel = page.locator("#secret-panel")
    expect(panel).to_contain_text("cannot be shown again")
    new = panel.locator("code").inner_text().strip()
    assert new.startswith(old[:24]) and new != old  # same token id, new secret
    shot(page, "rotated-from-page")
