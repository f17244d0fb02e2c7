"""The token's life with the keyboard only (issue 20): create, copy, rotate with a grace on
the rotate page, revoke; after each step `document.activeElement` is where a person needs
it (the secret panel, the changed row), never the page's body. Escape closes the Actions
menu and gives focus back to its button; a skip link leads to the main content."""

from __future__ import annotations

import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from services.secrets import TOKEN_PATTERN
from tests.browser.conftest import PASSWORD, sign_in, sign_up

PAGE = "/connections/api-tokens?environment=sandbox"


def active(page, expression: str):
    """Evaluate `expression` about the focused element `el`."""
    return page.evaluate(f"(() => {{ const el = document.activeElement; return {expression}; }})()")


def wait_focus(page, expression: str, timeout: float = 10.0) -> None:
    """Wait until the focused element `el` satisfies `expression` (polled from Python: our
    Content-Security-Policy refuses the eval that page.wait_for_function needs)."""
    deadline = time.monotonic() + timeout
    while not _settled(page, expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"focus never met {expression}: {active(page, 'el.outerHTML')}")
        page.wait_for_timeout(50)


def _settled(page, expression: str) -> bool:
    try:
        return bool(active(page, expression))
    except PlaywrightError:  # a navigation is under way (a plain form post)
        return False


def tab_to(page, expression: str, limit: int = 60, key: str = "Tab") -> int:
    """Press Tab until the focused element satisfies `expression`; how many presses."""
    for presses in range(1, limit + 1):
        page.keyboard.press(key)
        if active(page, expression):
            return presses
    raise AssertionError(f"{expression} not reached in {limit} presses of {key}")


def text_is(text: str) -> str:
    return f"el && el.textContent.trim() === {text!r}"


def test_create_copy_rotate_and_revoke_with_the_keyboard_only(page, shot):
    sign_up(page, name="Kay Board", organization="Keys Only")
    page.goto(PAGE)

    # The first Tab reaches the skip link; Enter moves the focus into the main content.
    page.keyboard.press("Tab")
    assert active(page, text_is("Skip to main content"))
    shot(page, "skip-link")
    page.keyboard.press("Enter")
    assert active(page, "el.id") == "main"
    presses = tab_to(page, text_is("+ Add"))
    assert presses <= 12, f"{presses} Tabs from the main content to + Add"

    # + Add: the form opens with the focus in Name.
    page.keyboard.press("Enter")
    expect(page.locator("#add-form")).to_be_visible()
    wait_focus(page, "el && el.name === 'name'")
    page.keyboard.type("Keyboard bot")
    page.keyboard.press("Enter")

    # Created: the focus is on the one-time secret panel, and the result is announced.
    panel = page.locator("#secret-panel")
    expect(panel).to_contain_text("cannot be shown again")
    wait_focus(page, "el && el.id === 'secret-panel'")
    expect(page.locator("#announcer")).to_contain_text("Keyboard bot")
    shot(page, "created-focus-on-panel")
    secret = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(secret)

    # Copy: Tab to the button, Enter; the focus stays on it.
    tab_to(page, text_is("Copy"))
    page.keyboard.press("Enter")
    expect(panel.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert active(page, "el.dataset.copyTarget") == "new-secret"

    # A second create with the same name: the error is beside Name, the focus is in it,
    # and the first token's secret panel is still there (it is shown only once).
    tab_to(page, text_is("+ Add"))
    page.keyboard.press("Enter")
    wait_focus(page, "el && el.name === 'name'")
    page.keyboard.type("Keyboard bot")
    page.keyboard.press("Enter")
    expect(page.locator("main").get_by_text("already exists")).to_be_visible()
    wait_focus(page, "el && el.name === 'name'")
    expect(page.locator("#new-secret")).to_have_text(secret)
    shot(page, "duplicate-keeps-panel")
    page.keyboard.press("Escape")  # nothing to close here: Escape changes nothing

    # Rotate with a grace, on the rotate page: its grace choice has the focus, on 24 hours.
    tab_to(page, "el.matches('a.token-name') && " + text_is("Keyboard bot"))
    page.keyboard.press("Enter")
    page.wait_for_url("**/connections/api-tokens/*")
    tab_to(page, text_is("Rotate…"))
    page.keyboard.press("Enter")
    page.wait_for_url("**/rotate**")
    wait_focus(page, "el && el.name === 'grace_period_seconds'")
    assert active(page, "el.value") == "86400"
    page.keyboard.press("ArrowDown")  # 7 days
    assert active(page, "el.value") == "604800"
    shot(page, "rotate-page")
    tab_to(page, text_is("Rotate secret"))
    page.keyboard.press("Enter")
    wait_focus(page, "el && el.id === 'secret-panel'")
    expect(page.locator("#secret-panel")).to_contain_text("The previous secret keeps working until")
    rotated = page.locator("#new-secret").inner_text().strip()
    assert TOKEN_PATTERN.fullmatch(rotated) and rotated != secret
    shot(page, "rotated-focus-on-panel")

    # The Actions menu: Enter opens it, Escape closes it and gives the focus back.
    menu = "summary[aria-label='Actions for Keyboard bot']"
    tab_to(page, f"el.matches({menu!r})")
    page.keyboard.press("Enter")
    expect(page.locator("details.menu[open]")).to_have_count(1)
    page.keyboard.press("Tab")  # into the menu
    page.keyboard.press("Escape")
    expect(page.locator("details.menu[open]")).to_have_count(0)
    assert active(page, f"el.matches({menu!r})")

    # Revoke: open the menu, open the confirmation, confirm. The focus lands on the row.
    page.keyboard.press("Enter")
    tab_to(page, text_is("Revoke…"))
    page.keyboard.press("Enter")
    tab_to(page, text_is("Revoke token"))
    page.keyboard.press("Enter")
    row = page.locator("tr.token-row.status-revoked")
    expect(row).to_contain_text("Revoked")
    wait_focus(page, "el && el.closest('tr.status-revoked') !== null")
    expect(page.locator("#announcer")).to_contain_text("Revoked")
    expect(page.locator("#new-secret")).to_have_count(0)  # a revoked secret is not offered
    shot(page, "revoked-focus-on-row")


def test_after_a_failed_sign_in_the_focus_is_on_the_password(page):
    email = sign_up(page)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, email, PASSWORD + " wrong")
    expect(page.locator("main").get_by_text("do not match")).to_be_visible()
    # The browser applies autofocus at its next rendering step, which lags under load.
    wait_focus(page, "el && el.name === 'password' && el.closest('form') !== null")


def test_the_environment_switch_shows_its_focus_ring(page, shot):
    sign_up(page)
    page.goto(PAGE)
    link = page.get_by_role("link", name="Production")
    link.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focus by keyboard: :focus-visible
    outline = link.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"
    # Nothing above clips it: no ancestor up to the switch hides overflow.
    clipped = link.evaluate(
        "el => { for (let n = el.parentElement; n && !n.matches('main'); n = n.parentElement)"
        " { if (getComputedStyle(n).overflow !== 'visible') return true } return false }"
    )
    assert not clipped
    shot(page, "env-switch-focus")


def test_focus_after_suspend_and_after_an_invite(page, shot):
    sign_up(page, name="Ivy Vite", organization="Invites Inc")
    page.goto(PAGE)
    page.get_by_role("link", name="+ Add").first.click()
    page.locator("#add-form").get_by_label("Name", exact=True).fill("Pausable")
    page.locator("#add-form").get_by_role("button", name="Create token").click()
    expect(page.locator("#new-secret")).to_be_visible()

    # Suspend from the Actions menu: the row is swapped and its Actions button has the focus.
    row = page.locator("tr.token-row", has=page.get_by_role("link", name="Pausable"))
    row.get_by_label("Actions for Pausable").click()
    row.get_by_role("button", name="Suspend").click()
    expect(page.locator("tr.status-inactive")).to_have_count(1)
    wait_focus(page, "el && el.matches(\"summary[aria-label='Actions for Pausable']\")")
    # The row's data-announce: what happened, in the words of the notice (issue 20, part 2).
    expect(page.locator("#announcer")).to_contain_text("Suspended “Pausable”: requests with it")

    # An invite: the focus is on the new link, and the form is back to the default role.
    page.goto("/settings/members")
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Role", exact=True).select_option(label="Admin")
    page.get_by_role("button", name="Create invite link").click()
    expect(page.locator("#invite-link")).to_contain_text("/invites/")
    wait_focus(page, "el && el.matches('#invites .secret-panel')")
    expect(page.get_by_label("Role", exact=True)).to_have_value("member")
    expect(page.get_by_label("Email")).to_have_value("")
    expect(
        page.get_by_role("button", name="Revoke invite for newcomer@example.com")
    ).to_be_visible()
    shot(page, "invited-focus-on-link")
