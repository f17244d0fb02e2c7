"""Issue 18 in Chromium: the token page of 120 tokens pages, sorts, filters and bulk-revokes,
with htmx; the revoked tokens then get 401 from the API."""

from __future__ import annotations

import re
import subprocess
import sys

from playwright.sync_api import expect

from tests.browser.conftest import ROOT, SCREENSHOTS, save_screenshot, sign_up

PAGE = "/connections/api-tokens"

SEED = """
    import sqlalchemy as sa
    from models import Membership, User
    from services import tokens
    from services.actor import Actor
    user = db.session.scalar(sa.select(User).where(User.email == {email!r}))
    membership = db.session.scalar(sa.select(Membership).where(Membership.user_id == user.id))
    org = membership.organization
    org.max_live_tokens = 1000
    actor = Actor(organization=org, membership=membership, ip="127.0.0.1")
    for i in range(120):
        token, secret = tokens.create_token(
            org, actor, name=f"svc-{{i:03d}}", environment="sandbox",
            role=("writer", "viewer")[i % 2], expires_at=tokens.expiry_from_days(90),
        )
        if i in (1, 3, 5):
            print(token.name, secret)
    db.session.commit()
"""


def seed(live_server, email: str) -> dict[str, str]:
    script = (
        "from app import create_app\nfrom extensions import db\n"
        "app = create_app()\nwith app.app_context():\n" + SEED.format(email=email)
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=live_server.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def rows(page):
    return page.locator("tr.token-row")


def test_pages_sorts_filters_and_bulk_revokes(page, live_server, shot):
    email = sign_up(page, organization="Platform team")
    secrets = seed(live_server, email)
    page.goto(PAGE)
    expect(rows(page)).to_have_count(50)
    expect(page.locator("#group-writer .group-head")).to_contain_text("60")  # true totals
    expect(page.locator("main").get_by_text("120 live tokens in sandbox")).to_be_visible()
    shot(page, "first-page")

    page.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(re.compile(r"after="))
    expect(rows(page)).to_have_count(50)
    page.get_by_role("link", name="Next →").click()
    expect(rows(page)).to_have_count(20)  # 120 = 50 + 50 + 20
    page.get_by_role("link", name="← Previous").click()
    expect(rows(page)).to_have_count(50)

    page.get_by_role("link", name="Name", exact=True).click()
    expect(page).to_have_url(re.compile(r"sort=name"))
    expect(rows(page).first.get_by_role("link", name="svc-000")).to_be_visible()

    page.get_by_label("Access").select_option("viewer")
    expect(page).to_have_url(re.compile(r"role=viewer"))
    expect(page.locator("#group-writer")).to_have_count(0)
    expect(rows(page).first.get_by_role("link", name="svc-001")).to_be_visible()
    shot(page, "viewers-by-name")

    for name in ("svc-001", "svc-003"):
        page.get_by_label(f"Select {name}").check()
    page.get_by_role("button", name="Revoke…").click()
    expect(page.get_by_role("heading", name="Revoke 2 sandbox tokens?")).to_be_visible()
    shot(page, "confirm")
    page.get_by_role("button", name="Revoke 2 tokens").click()
    expect(page.locator("main").get_by_text("Revoked 2 tokens.")).to_be_visible()

    for name, secret in secrets.items():
        response = page.request.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        if name in ("svc-001", "svc-003"):
            assert response.status == 401
            assert response.json()["error"]["code"] == "token_revoked"
        else:
            assert response.status == 200

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(PAGE + "?role=viewer&sort=name")
    expect(rows(page).first).to_be_visible()
    shot(page, "narrow")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    save_screenshot(page, SCREENSHOTS / "token-list-390-top.png", full_page=False)  # the top


def test_the_audit_log_pages_older_and_newer(page, live_server, shot):
    email = sign_up(page, organization="Busy log")
    seed(live_server, email)  # 120 token.created events, and the sign-up's
    page.goto("/connections/audit-log")
    expect(page.locator("table.audit tbody tr")).to_have_count(50)
    expect(page.locator("main").get_by_text("121 events")).to_be_visible()
    page.get_by_role("link", name="Older →").click()
    expect(page).to_have_url(re.compile(r"older=\d+"))
    expect(page.get_by_role("link", name="← Newer")).to_be_visible()
    shot(page, "second-page")
    page.get_by_role("link", name="← Newer").click()
    expect(page.get_by_role("link", name="← Newer")).to_have_count(0)
