"""What a person sees when the server refuses an htmx action, and what a browser without
JavaScript is not offered."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import sign_up
from tests.browser.test_tokens_browser import fill_create_form, open_actions, row_of

PAGE = "/connections/api-tokens"


def test_an_action_refused_because_another_tab_switched_organization_says_so(
    context, live_server, shot
):
    page = context.new_page()
    email = sign_up(page, organization="First Org")
    live_server.flask("keysmith", "add-org", email, "Second Org")
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").first.click()
    fill_create_form(page, "Deploy bot").get_by_role("button", name="Create token").click()
    expect(page.locator("#secret-panel")).to_contain_text("Deploy bot")

    other_tab = context.new_page()
    other_tab.goto(PAGE)
    other_tab.locator("details.switcher summary").click()
    other_tab.get_by_role("button", name=re.compile("Second Org")).click()
    expect(other_tab.locator("details.switcher summary")).to_have_text("Second Org")

    row = open_actions(page, "Deploy bot")
    row.get_by_role("button", name="Suspend").click()
    notice = page.get_by_role("alert").filter(has_text="no longer current")
    expect(notice).to_be_visible()
    expect(row_of(page, "Deploy bot").get_by_text("Active", exact=True)).to_be_visible()
    shot(page, "stale-tab-refused")


def test_without_javascript_no_copy_button_is_offered(browser, live_server, shot):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    sign_up(page)
    page.goto(f"{PAGE}/new?environment=sandbox")
    fill_create_form(page, "No script").get_by_role("button", name="Create token").click()
    panel = page.locator("#secret-panel")
    expect(panel).to_contain_text("cannot be shown again")
    expect(panel.get_by_role("button", name="Copy")).to_be_hidden()
    shot(page, "no-js-secret")
    context.close()


def test_with_javascript_the_copy_button_is_there(context):
    page = context.new_page()
    sign_up(page)
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").first.click()
    fill_create_form(page, "With script").get_by_role("button", name="Create token").click()
    expect(page.locator("#secret-panel").get_by_role("button", name="Copy")).to_be_visible()
