"""Settings → Account in Chromium: the sessions list, signing another browser out, changing
the password, and signing out everywhere."""

import re

from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, sign_in, sign_up, unique_email

NEW_PASSWORD = "a brand new passphrase here"


def test_sessions_are_listed_and_ended_and_the_password_changed(browser, live_server, page, shot):
    email = sign_up(page)
    other = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    phone = other.new_page()
    try:
        sign_in(phone, email)
        phone.wait_for_url("**/connections/api-tokens**")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
        page.get_by_role("navigation", name="Settings").get_by_role("link", name="Account").click()
        expect(page).to_have_url(re.compile(r"/settings/account$"))
        rows = page.locator("table.sessions tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("main").get_by_text("This browser")).to_have_count(1)
        shot(page, "sessions-1280")
        page.set_viewport_size({"width": 390, "height": 844})
        shot(page, "sessions-390")
        page.set_viewport_size({"width": 1280, "height": 900})

        # Sign out the other browser (the row without "This browser").
        rows.filter(has_not_text="This browser").get_by_role("button", name="Sign out").click()
        expect(page.locator("main").get_by_text("Signed out the session of")).to_be_visible()
        expect(rows).to_have_count(1)
        phone.reload()
        expect(phone).to_have_url(re.compile(r"/login"))

        # The phone signs in again; changing the password signs it out, not this browser.
        sign_in(phone, email)
        phone.wait_for_url("**/connections/api-tokens**")
        page.get_by_role("link", name="Change password").click()
        page.get_by_label("Current password").fill("not the password")
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Confirm new password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(
            page.locator("main").get_by_text("That is not your current password.")
        ).to_be_visible()
        shot(page, "password-error")
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Confirm new password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(
            page.get_by_text("Your password was changed. 1 other session signed out.")
        ).to_be_visible()
        phone.reload()
        expect(phone).to_have_url(re.compile(r"/login"))

        # Sign out everywhere ends this browser's session too.
        sign_in(phone, email, NEW_PASSWORD)
        phone.wait_for_url("**/connections/api-tokens**")
        page.get_by_role("button", name="Sign out everywhere").click()
        expect(page).to_have_url(re.compile(r"/login$"))
        expect(page.locator("main").get_by_text("signed out everywhere")).to_be_visible()
        phone.reload()
        expect(phone).to_have_url(re.compile(r"/login"))
    finally:
        other.close()


def test_a_weak_password_is_refused_with_advice_keeping_what_was_typed(page, shot):
    page.goto("/signup")
    page.get_by_label("Your name").fill("Linus")
    page.get_by_label("Work email").fill("linus@example.com")
    page.get_by_label("Password").fill("password1234")
    page.get_by_label("Organization").fill("Kernel")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("main").get_by_text("This password is too easy to guess.")).to_be_visible()
    expect(page.locator("main").get_by_text("This is a very common password.")).to_be_visible()
    expect(page.get_by_label("Your name")).to_have_value("Linus")
    expect(page.get_by_label("Organization")).to_have_value("Kernel")
    expect(page.get_by_label("Password")).to_have_value("")
    shot(page, "weak-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "weak-390")


def _enrol(page, shot=None):
    import pyotp

    page.goto("/settings/account")
    page.get_by_role("link", name="Set up two-factor sign-in").click()
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    if shot:
        shot(page, "two-factor-1280")
        page.set_viewport_size({"width": 390, "height": 844})
        shot(page, "two-factor-390")
        page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_text("Can't scan it?").click()
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    return totp


def test_requiring_two_factor_sends_a_member_without_it_to_set_it_up(
    browser, live_server, page, shot
):
    sign_up(page, organization="Strict Co")
    _enrol(page)
    page.goto("/settings/policy")
    page.get_by_label("Require two-factor sign-in for every member").check()
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("main").get_by_text("Key policy saved.")).to_be_visible()
    shot(page, "policy-requires-2fa")

    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Members").click()
    page.get_by_label("Email").fill(unique_email("member"))
    page.get_by_role("button", name="Create invite link").click()
    link = page.locator("#invite-link").inner_text()

    other = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    try:
        member = other.new_page()
        member.goto(link)
        member.get_by_label("Your name").fill("Bob")
        member.get_by_label("Password").fill(PASSWORD)
        member.get_by_role("button", name="Create account and join").click()
        expect(member).to_have_url(re.compile(r"/settings/account/two-factor$"))
        expect(member.get_by_text("Strict Co requires two-factor sign-in")).to_be_visible()
        shot(member, "member-sent-to-set-up-390")
        _enrol(member)
        member.get_by_role("link", name="I have saved them").click()
        member.get_by_role("link", name="Connections").click()
        expect(member).to_have_url(re.compile(r"/connections/api-tokens"))
    finally:
        other.close()


def test_two_factor_enrolment_and_sign_in(page, shot):
    import time

    import pyotp

    email = sign_up(page)
    page.goto("/settings/account")
    page.get_by_role("link", name="Set up two-factor sign-in").click()
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    shot(page, "two-factor-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "two-factor-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_text("Can't scan it?").click()
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    codes = [code.strip() for code in page.locator("#recovery-codes li").all_inner_texts()]
    page.get_by_role("button", name="Copy codes").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "\n".join(codes)
    shot(page, "recovery-codes")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "recovery-codes-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="I have saved them").click()
    expect(page.locator("main").get_by_text("10 recovery codes left")).to_be_visible()

    page.get_by_role("button", name="Sign out", exact=True).click()
    sign_in(page, email)
    expect(page).to_have_url(re.compile(r"/login/two-factor$"))
    shot(page, "code-step")
    # The current code confirmed the set-up and works once; the next one (clock drift) signs in.
    page.get_by_label("Authentication code").fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/connections/api-tokens**")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_sudo_mode_asks_for_the_password_then_saves_the_policy(live_server, page, shot):
    import sqlite3

    sign_up(page, organization="Sudo Co")
    database = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:  # the password was given 11 minutes ago
        conn.execute("UPDATE user_sessions SET authenticated_at = datetime('now', '-11 minutes')")
    page.goto("/settings/policy")
    page.get_by_label("Maximum live tokens").fill("42")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("heading", name="Confirm access")).to_be_visible()
    shot(page, "sudo-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "sudo-390")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm and continue").click()
    expect(page.locator("main").get_by_text("Key policy saved.")).to_be_visible()
    expect(page.get_by_label("Maximum live tokens")).to_have_value("42")
