"""Sign up, sign out, sign in, a wrong password and switching organization, in Chromium."""

import re

from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, sign_in, sign_up, unique_email


def test_sign_up_sign_out_and_sign_in_again(page, shot):
    page.goto("/signup")
    shot(page, "signup-empty")
    email = sign_up(page, name="Grace Hopper", organization="Compilers Inc")
    expect(page.locator("main").get_by_text("Welcome to Keysmith, Grace Hopper")).to_be_visible()
    expect(page.locator(".orgname")).to_have_text("Compilers Inc")
    expect(
        page.get_by_role("navigation", name="Connections").get_by_role("link", name="API tokens")
    ).to_be_visible()
    shot(page, "after-signup")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("main").get_by_text("You have been signed out.")).to_be_visible()

    sign_in(page, email)
    page.wait_for_url("**/connections/api-tokens**")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_signup_errors_keep_what_was_typed_but_not_the_password(page, shot):
    page.goto("/signup")
    page.get_by_label("Your name").fill("Linus")
    page.get_by_label("Work email").fill("not-an-email")
    page.get_by_label("Password").fill("short")
    page.get_by_label("Organization").fill("Kernel")
    page.get_by_role("button", name="Create account").click()
    expect(
        page.locator("main").get_by_text("Password must be at least 12 characters.")
    ).to_be_visible()
    expect(page.get_by_label("Your name")).to_have_value("Linus")
    expect(page.get_by_label("Work email")).to_have_value("not-an-email")
    expect(page.get_by_label("Organization")).to_have_value("Kernel")
    expect(page.get_by_label("Password")).to_have_value("")
    shot(page, "signup-errors")


def test_wrong_password_says_so_without_revealing_the_account(page, shot):
    email = sign_up(page)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, email, "definitely the wrong one")
    expect(
        page.locator("main").get_by_text("That email and password do not match an account.")
    ).to_be_visible()
    expect(page.get_by_label("Email")).to_have_value(email)
    shot(page, "wrong-password")
    sign_in(page, unique_email("nobody"), "definitely the wrong one")
    expect(
        page.locator("main").get_by_text("That email and password do not match an account.")
    ).to_be_visible()


def test_switch_between_two_organizations(page, live_server, shot):
    email = sign_up(page, organization="First Org")
    live_server.flask("keysmith", "add-org", email, "Second Org")
    page.reload()
    switcher = page.locator("details.switcher")
    expect(switcher.locator("summary")).to_have_text("First Org")
    switcher.locator("summary").click()
    shot(page, "switcher-open")
    page.get_by_role("button", name=re.compile("Second Org")).click()
    expect(page.locator("details.switcher summary")).to_have_text("Second Org")
    shot(page, "switched")


def test_phone_width_layout_has_no_horizontal_scroll(browser, live_server, shot):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 375, "height": 740})
    page = context.new_page()
    sign_up(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    shot(page, "phone")
    context.close()


def test_password_is_never_in_the_page_after_a_failed_sign_in(page):
    email = sign_up(page)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, email, PASSWORD + "x")
    assert PASSWORD not in page.content()


def test_start_another_organization_and_switch_back(page, shot):
    sign_up(page, organization="First Org")
    page.goto("/organizations/new")
    page.get_by_label("Organization name").fill("Side Project")
    shot(page, "new-organization")
    page.get_by_role("button", name="Create organization").click()
    expect(
        page.locator("main").get_by_text("Created Side Project. You are its owner.")
    ).to_be_visible()
    expect(page.locator("details.switcher summary")).to_have_text("Side Project")
    page.locator("details.switcher summary").click()
    page.get_by_role("button", name=re.compile("First Org")).click()
    expect(page.locator("details.switcher summary")).to_have_text("First Org")
