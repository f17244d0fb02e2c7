"""Teams in Chromium: invite → accept in a second browser → role change → removal with the
revoked tokens; filtering the audit log with the filters in the URL; each page at phone width."""

from __future__ import annotations

import re
import subprocess
import sys

from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, ROOT, sign_up, unique_email

# Tokens are made through the token service (the token page is another area's work).
_MAKE_TOKENS = """
import sys
from app import create_app
from extensions import db
from services import accounts, tokens
from services.actor import Actor

email, org_name, *names = sys.argv[1:]
app = create_app()
with app.app_context():
    user = accounts.user_by_email(email)
    [membership] = [m for m in accounts.memberships_of(user) if m.organization.name == org_name]
    actor = Actor(organization=membership.organization, membership=membership, ip="198.51.100.7",
                  user_agent="keysmith-browser-test")
    for name in names:
        tokens.create_token(membership.organization, actor, name=name, environment="production",
                            role="writer", expires_at=tokens.expiry_from_days(30))
    db.session.commit()
"""


def make_tokens(live_server, email: str, org: str, *names: str) -> None:
    subprocess.run(
        [sys.executable, "-c", _MAKE_TOKENS, email, org, *names],
        cwd=ROOT,
        env=live_server.env,
        check=True,
        capture_output=True,
    )


def invite(page, email: str, role: str) -> str:
    page.goto("/settings/members")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role", exact=True).select_option(label=role)
    page.get_by_role("button", name="Create invite link").click()
    link = page.locator("#invite-link")
    expect(link).to_contain_text("/invites/")
    return link.inner_text().strip()


def test_invite_accept_change_role_and_remove_with_revoked_tokens(browser, page, live_server, shot):
    owner_email = sign_up(page, name="Olive Owner", organization="Teamworks")
    page.goto("/settings/members")
    expect(page.get_by_role("heading", name=re.compile("Members"))).to_be_visible()
    shot(page, "members-empty")

    new_email = unique_email("grace")
    link = invite(page, new_email, "Member")
    expect(page.locator("main").get_by_text(f"Invite link for {new_email}")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(re.escape(new_email)))).to_be_visible()
    shot(page, "invite-link")

    # The invited person opens the link in another browser.
    other = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    guest = other.new_page()
    guest.goto(link)
    expect(guest.get_by_role("heading", name="Join Teamworks")).to_be_visible()
    shot(guest, "accept-phone")
    guest.get_by_label("Your name").fill("Grace Hopper")
    guest.get_by_label("Password").fill(PASSWORD)
    guest.get_by_role("button", name="Create account and join").click()
    guest.wait_for_url("**/connections/api-tokens**")
    expect(guest.get_by_text("Welcome to Teamworks, Grace Hopper.")).to_be_visible()
    guest.goto(link)
    expect(
        guest.get_by_role("heading", name="This invitation can no longer be used")
    ).to_be_visible()
    shot(guest, "used-link-phone")
    # As a member, the team is visible but not editable.
    guest.goto("/settings/members")
    expect(guest.get_by_text("Olive Owner")).to_be_visible()
    expect(guest.get_by_role("button", name="Create invite link")).to_have_count(0)
    shot(guest, "members-as-member-phone")
    guest.goto("/settings/policy")
    expect(guest.get_by_text("Only owners and admins can change the key policy.")).to_be_visible()
    shot(guest, "policy-read-only-phone")

    make_tokens(live_server, new_email, "Teamworks", "grace-deploy", "grace-metrics")

    page.goto("/settings/members")
    row = page.locator("tr", has_text=new_email)
    expect(row.locator(".num")).to_have_text("2")
    row.get_by_label("Role of Grace Hopper").select_option("admin")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("tr", has_text=new_email).get_by_text("Saved")).to_be_visible()
    expect(page.get_by_label("Role of Grace Hopper")).to_have_value("admin")
    shot(page, "role-changed")

    page.locator("tr", has_text=new_email).get_by_role("link", name="Remove…").click()
    expect(page.get_by_role("heading", name="Remove Grace Hopper from Teamworks?")).to_be_visible()
    expect(page.get_by_role("cell", name="grace-deploy")).to_be_visible()
    expect(page.get_by_role("cell", name="grace-metrics")).to_be_visible()
    shot(page, "remove-confirm")
    page.get_by_role("button", name="Remove Grace Hopper and revoke 2 tokens").click()
    expect(
        page.get_by_text("Grace Hopper was removed. 2 tokens they created were revoked.")
    ).to_be_visible()
    expect(page.locator("tr", has_text=new_email)).to_have_count(0)
    shot(page, "after-removal")

    # Grace's session no longer reaches the organization.
    guest.goto("/settings/members")
    expect(guest.get_by_text("You are not a member of any organization now.")).to_be_visible()
    expect(guest.get_by_role("button", name="Create organization")).to_be_visible()
    other.close()

    page.goto("/connections/audit-log?action=token.revoked")
    expect(page.locator("table.audit tbody tr")).to_have_count(2)
    expect(page.locator("main").get_by_text("grace-deploy")).to_be_visible()
    assert owner_email


def test_filter_the_audit_log_updates_the_url(page, live_server, shot):
    owner_email = sign_up(page, name="Ada Auditor", organization="Ledger Ltd")
    for name in ("bob", "carol"):
        invite(page, unique_email(name), "Viewer")
    make_tokens(live_server, owner_email, "Ledger Ltd", "ledger-api")
    page.goto("/connections/audit-log")
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()
    shot(page, "audit-all")

    page.get_by_label("Action").select_option("member.invited")
    expect(page).to_have_url(re.compile(r"action=member\.invited"))
    expect(page.locator("table.audit tbody tr")).to_have_count(2)
    page.get_by_label("Environment").select_option("production")
    expect(page).to_have_url(re.compile(r"action=member\.invited.*environment=production"))
    expect(page.locator("main").get_by_text("No events match these filters.")).to_be_visible()
    page.get_by_label("Action").select_option("token.created")
    expect(page.locator("table.audit tbody tr")).to_have_count(1)
    shot(page, "audit-filtered")

    # The filtered view is bookmarkable: reloading keeps it.
    page.reload()
    expect(page.get_by_label("Action")).to_have_value("token.created")
    expect(page.locator("table.audit tbody tr")).to_have_count(1)
    csv_link = page.get_by_role("link", name="Export CSV")
    expect(csv_link).to_have_attribute("href", re.compile(r"audit-log\.csv\?action=token\.created"))

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/connections/audit-log")
    shot(page, "audit-phone")


def test_policy_and_members_pages_look_right_at_phone_width(page, shot):
    sign_up(page, name="Pat Policy", organization="Rules Inc")
    invite(page, unique_email("dee"), "Admin")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/settings/members")
    shot(page, "members-phone")
    page.goto("/settings/policy")
    page.get_by_label("Maximum live tokens").fill("0")
    page.get_by_role("button", name="Save policy").click()
    expect(
        page.locator("main").get_by_text("Enter a whole number from 1 to 100,000.")
    ).to_be_visible()
    shot(page, "policy-error-phone")
    page.get_by_label("Maximum live tokens").fill("25")
    page.get_by_label("Allow tokens that never expire").check()
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("main").get_by_text("Key policy saved.")).to_be_visible()
    expect(page.get_by_label("Maximum live tokens")).to_have_value("25")
    page.set_viewport_size({"width": 1280, "height": 900})
    shot(page, "policy-saved")
