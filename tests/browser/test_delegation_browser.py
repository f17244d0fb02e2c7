"""Who holds a secret, in Chromium (issue 13): an admin rotates the owner's token and keeps
the new secret; the owner sees who holds it, is asked before a demotion revokes it, keeps
one token by unticking it, and removing the admin revokes the rest."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, sign_up, unique_email
from tests.browser.test_teams_browser import invite, make_tokens
from tests.browser.test_tokens_browser import rotate_from_menu, row_of


def test_secrets_an_admin_holds_are_listed_and_revoked_when_they_go(
    browser, page, live_server, shot
):
    owner_email = sign_up(page, name="Olive Owner", organization="Holders Inc")
    make_tokens(live_server, owner_email, "Holders Inc", "owner-deploy", "owner-metrics")
    admin_email = unique_email("grace")
    link = invite(page, admin_email, "Admin")

    other = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    grace = other.new_page()
    grace.set_default_timeout(10_000)
    grace.goto(link)
    grace.get_by_label("Your name").fill("Grace Hopper")
    grace.get_by_label("Password").fill(PASSWORD)
    grace.get_by_role("button", name="Create account and join").click()
    grace.wait_for_url("**/connections/api-tokens**")
    # Grace, an admin, rotates both of the owner's tokens and keeps the new secrets.
    grace.goto("/connections/api-tokens?environment=production")
    for name in ("owner-deploy", "owner-metrics"):
        rotate_from_menu(grace, name, "604800")
        expect(grace.locator("#new-secret")).to_be_visible()
        grace.goto("/connections/api-tokens?environment=production")

    # The owner's token page says who holds the secret now.
    page.goto("/connections/api-tokens?environment=production")
    row_of(page, "owner-deploy").get_by_role("link", name="owner-deploy").click()
    expect(page.locator("main").get_by_text(f"Secret shown to{admin_email}")).to_be_visible()
    shot(page, "token-page-holder")

    # Demoting Grace to Member asks first, listing the secrets she holds.
    page.goto("/settings/members")
    row = page.locator("tr", has_text=admin_email)
    row.get_by_label("Role of Grace Hopper").select_option("member")
    row.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Make Grace Hopper Member?")).to_be_visible()
    held = page.get_by_role("table", name="Tokens whose secrets they hold")
    expect(held.get_by_role("cell", name="owner-deploy", exact=True)).to_be_visible()
    expect(held.get_by_role("cell", name="owner-metrics", exact=True)).to_be_visible()
    shot(page, "demote-confirm")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "demote-confirm-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    # The owner trusts one of them: unticks it, then confirms.
    page.get_by_label("Revoke owner-metrics").uncheck()
    page.get_by_role("button", name=re.compile(r"Make Grace Hopper Member")).click()
    page.wait_for_url("**/settings/members")
    expect(page.get_by_label("Role of Grace Hopper")).to_have_value("member")

    page.goto("/connections/api-tokens?environment=production")
    # Revoked: in the collapsed Revoked group.
    expect(page.locator("tr.status-revoked", has_text="owner-deploy")).to_have_count(1)
    expect(row_of(page, "owner-metrics")).to_have_class(re.compile("status-active"))

    page.goto("/connections/audit-log?action=token.kept")
    expect(page.locator("table.audit tbody tr")).to_have_count(1)
    expect(page.locator("main").get_by_text("owner-metrics")).to_be_visible()
    shot(page, "audit-kept")

    # Removing her now lists what she still holds, ticked, and revokes it.
    page.goto("/settings/members")
    page.locator("tr", has_text=admin_email).get_by_role("link", name="Remove…").click()
    expect(
        page.get_by_role("heading", name="Remove Grace Hopper from Holders Inc?")
    ).to_be_visible()
    expect(page.get_by_label("Revoke owner-metrics")).to_be_checked()
    shot(page, "remove-confirm")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "remove-confirm-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name=re.compile("Remove Grace Hopper and revoke 1 token")).click()
    expect(
        page.locator("main").get_by_text(re.compile("1 token whose secrets they held"))
    ).to_be_visible()
    page.goto("/connections/api-tokens?environment=production")
    expect(page.locator("tr.status-revoked", has_text="owner-metrics")).to_have_count(1)
    other.close()
