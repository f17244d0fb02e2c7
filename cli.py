"""`flask keysmith ...`: operator commands that script a fresh install, through the services."""

from __future__ import annotations

import logging
import signal
import time

import click
import sqlalchemy as sa
from flask import Flask, current_app, url_for
from flask.cli import AppGroup

from extensions import db
from models import ENVIRONMENTS, ROLES, TOKEN_ROLES, TOKEN_TYPES, Membership, Organization, User
from services import accounts, hygiene, members, sessions, tokens, two_factor, webhooks
from services.actor import Actor, system_actor
from services.errors import DomainError

keysmith = AppGroup("keysmith", help="Keysmith operator commands.")


def _fail(error: DomainError) -> None:
    db.session.rollback()
    details = "; ".join(f"{k}: {v}" for k, v in error.details.items())
    raise click.ClickException(f"{error.message} {details}".strip())


@keysmith.command("create-user")
@click.argument("email")
@click.argument("organization")
@click.option("--name", default=None, help="Display name (defaults to the email's local part).")
@click.password_option(help="At least 12 characters.")
def create_user(email: str, organization: str, name: str | None, password: str) -> None:
    """Create a user who owns a new ORGANIZATION (the first account of a fresh install)."""
    try:
        user, org = accounts.sign_up(
            email=email,
            password=password,
            name=name or email.split("@")[0],
            organization=organization,
            default_rate_limit=current_app.config["RATE_LIMIT_DEFAULT"],
        )
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"Created {user.email}, owner of organization {org.id} ({org.name}).")


@keysmith.command("add-org")
@click.argument("email")
@click.argument("organization")
def add_org(email: str, organization: str) -> None:
    """Create another ORGANIZATION owned by the existing user EMAIL."""
    user = accounts.user_by_email(email)
    if user is None:
        raise click.ClickException(f"No user with email {email}.")
    try:
        org = accounts.create_organization(
            user,
            name=organization,
            default_rate_limit=current_app.config["RATE_LIMIT_DEFAULT"],
            via="cli",
        )
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"Created organization {org.id} ({org.name}), owned by {user.email}.")


tokens_cli = AppGroup("tokens", help="Create, list, rotate and revoke API tokens.")
keysmith.add_command(tokens_cli)


def _organization(org_id: int) -> Organization:
    organization = db.session.get(Organization, org_id)
    if organization is None:
        raise click.ClickException(f"No organization {org_id}.")
    return organization


def _cli_actor(organization: Organization):
    return system_actor(organization, "cli")


def _owner_actor(organization: Organization, email: str | None) -> Actor:
    """The person a CLI-made token belongs to: a token acts with its owner's rights, so a
    token with no owner could do nothing. Defaults to the organization's first owner."""
    query = (
        sa.select(Membership)
        .join(Membership.user)
        .where(Membership.organization_id == organization.id)
        .order_by(Membership.id)
    )
    if email:
        query = query.where(User.email == accounts.normalize_email(email))
    else:
        query = query.where(Membership.role == "owner")
    membership = db.session.scalar(query.limit(1))
    if membership is None:
        raise click.ClickException(
            f"No member {email} in organization {organization.id}." if email else "No owner."
        )
    return Actor(organization=organization, membership=membership)


@tokens_cli.command("create")
@click.option("--org", "org_id", type=int, required=True, help="Organization id.")
@click.option("--name", required=True)
@click.option("--environment", type=click.Choice(ENVIRONMENTS), default="sandbox")
@click.option("--role", type=click.Choice([*TOKEN_ROLES, "recorder"]), default="viewer")
@click.option(
    "--scopes", default="", help="Space- or comma-separated scopes (default: all of the role)."
)
@click.option("--type", "type_", type=click.Choice(TOKEN_TYPES), default="generic")
@click.option("--expires-in-days", type=int, default=90, show_default=True)
@click.option("--never-expires", is_flag=True, help="Only where the key policy allows it.")
@click.option(
    "--owner", "owner_email", default=None, help="Member the token belongs to (default: an owner)."
)
def create_token(
    org_id, name, environment, role, scopes, type_, expires_in_days, never_expires, owner_email
):
    """Create a token and print its secret (shown this once)."""
    organization = _organization(org_id)
    actor = _owner_actor(organization, owner_email)
    try:
        _, secret = tokens.create_token(
            organization,
            actor,
            name=name,
            environment=environment,
            role=role,
            scopes=scopes or None,
            type=type_,
            expires_at=None if never_expires else tokens.expiry_from_days(expires_in_days),
        )
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(secret)


@tokens_cli.command("list")
@click.option("--org", "org_id", type=int, required=True, help="Organization id.")
@click.option("--environment", type=click.Choice(ENVIRONMENTS), default=None)
def list_tokens(org_id, environment):
    """List tokens (never their secrets), tab-separated."""
    organization = _organization(org_id)
    click.echo("id\tenvironment\tname\trole\tstatus\tprefix\texpires_at")
    for token in db.session.scalars(tokens.tokens_of(organization, environment)):
        expires = token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if token.expires_at else "never"
        click.echo(
            f"{token.id}\t{token.environment}\t{token.name}\t{token.role}\t"
            f"{token.status}\t{token.prefix}\t{expires}"
        )


@tokens_cli.command("rotate")
@click.option("--org", "org_id", type=int, required=True, help="Organization id.")
@click.argument("token_id")
@click.option("--grace-seconds", type=int, default=0, show_default=True)
def rotate_token(org_id, token_id, grace_seconds):
    """Give TOKEN_ID a new secret and print it; the old one works for --grace-seconds more."""
    organization = _organization(org_id)
    try:
        token = tokens.get_token_or_404(organization, None, token_id)
        secret = tokens.rotate_token(token, _cli_actor(organization), grace_seconds=grace_seconds)
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(secret)


@tokens_cli.command("revoke")
@click.option("--org", "org_id", type=int, required=True, help="Organization id.")
@click.argument("token_id")
def revoke_token(org_id, token_id):
    """Revoke TOKEN_ID for good."""
    organization = _organization(org_id)
    try:
        token = tokens.get_token_or_404(organization, None, token_id)
        tokens.revoke_token(token, _cli_actor(organization))
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"Revoked {token.id} ({token.name}).")


members_cli = AppGroup("members", help="Change a member's role or remove them.")
keysmith.add_command(members_cli)


def _membership(organization: Organization, email: str) -> Membership:
    membership = db.session.scalar(
        sa.select(Membership)
        .join(Membership.user)
        .where(
            Membership.organization_id == organization.id,
            User.email == accounts.normalize_email(email),
        )
    )
    if membership is None:
        raise click.ClickException(f"No member {email} in organization {organization.id}.")
    return membership


def _show_stake(stake: members.TokensAtStake, keep: set[str]) -> None:
    """What the change revokes, as the removal dialog lists it."""
    for token in stake.created:
        click.echo(f"revoke\tcreated\t{token.id}\t{token.environment}\t{token.name}")
    for token in stake.held:
        verb = "keep" if token.id in keep else "revoke"
        click.echo(f"{verb}\tholds-secret\t{token.id}\t{token.environment}\t{token.name}")
    if not stake.all:
        click.echo("No token is affected.")


def _checked_keep(stake: members.TokensAtStake, keep: tuple[str, ...]) -> set[str]:
    held = {t.id for t in stake.held}
    unknown = [k for k in keep if k not in held]
    if unknown:
        raise click.ClickException(
            f"--keep {unknown[0]}: only tokens whose secrets they hold may be kept "
            "(the tokens they created are always revoked)."
        )
    return set(keep)


_KEEP = click.option(
    "--keep",
    multiple=True,
    metavar="TOKEN_ID",
    help="A token whose secret they hold that stays live (audited); repeatable.",
)
_YES = click.option("--yes", is_flag=True, help="Do it without asking.")


@members_cli.command("remove")
@click.option("--org", "org_id", type=int, required=True, help="Organization id.")
@click.argument("email")
@_KEEP
@_YES
def remove_member(org_id: int, email: str, keep: tuple[str, ...], yes: bool) -> None:
    """Remove EMAIL: revoke the tokens they created and those whose secrets they hold."""
    organization = _organization(org_id)
    member = _membership(organization, email)
    stake = members.tokens_at_stake(member)
    kept = _checked_keep(stake, keep)
    _show_stake(stake, kept)
    if not yes:
        click.confirm(f"Remove {member.user.email} from {organization.name}?", abort=True)
    try:
        revoked = members.remove_member(member, _cli_actor(organization), keep=kept)
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"Removed {email}; {len(revoked)} token(s) revoked, {len(kept)} kept.")


@members_cli.command("set-role")
@click.option("--org", "org_id", type=int, required=True, help="Organization id.")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
@_KEEP
@_YES
def set_role(org_id: int, email: str, role: str, keep: tuple[str, ...], yes: bool) -> None:
    """Give EMAIL another ROLE; a demotion revokes what the new role could not have done."""
    organization = _organization(org_id)
    member = _membership(organization, email)
    stake = members.tokens_at_stake(member, new_role=role)
    if members.is_demotion(member, role):
        kept = _checked_keep(stake, keep)
        _show_stake(stake, kept)
        if stake.all and not yes:
            click.confirm(f"Make {member.user.email} {role} and revoke these?", abort=True)
    else:
        kept = set()
    try:
        members.change_role(member, _cli_actor(organization), role=role, keep=kept)
    except DomainError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"{email} is now {role}.")


@keysmith.command("reset-password")
@click.argument("email")
@click.option(
    "--set",
    "set_now",
    is_flag=True,
    help="Type the new password here (asked twice, never echoed) instead of printing a link.",
)
@click.option(
    "--two-factor-off",
    is_flag=True,
    help="Also turn off their two-factor sign-in (a lost phone and lost recovery codes).",
)
def reset_password(email: str, set_now: bool, two_factor_off: bool) -> None:
    """Sign EMAIL out everywhere and print a one-time link (valid 1 hour) to choose a new
    password; or, with --set, set it here. The link is printed, never logged or stored."""
    user = accounts.user_by_email(email)
    if user is None:
        raise click.ClickException(f"No user with email {email}.")
    if two_factor_off:
        two_factor.disable(user, ip=None, user_agent="flask keysmith reset-password")
        click.echo(f"Two-factor sign-in of {user.email} is off.", err=True)
    if set_now:
        password = click.prompt(
            "New password", hide_input=True, confirmation_prompt="Repeat for confirmation"
        )
        try:
            accounts.set_password(user, password, via="cli")
        except DomainError as exc:
            _fail(exc)
    else:
        # The old password may be what leaked: it stops working now, not when the link is used.
        accounts.cancel_password(user)
        _, secret = accounts.create_password_reset(user)
    ended = sessions.end_all_of(user)
    db.session.commit()
    click.echo(f"Signed {user.email} out of {ended} session(s).", err=True)
    if set_now:
        click.echo(f"Password of {user.email} changed.")
        return
    click.echo(_reset_link(secret))
    click.echo("Give this link to them privately; it works once, for one hour.", err=True)


def _reset_link(secret: str) -> str:
    base = current_app.config.get("BASE_URL") or "http://127.0.0.1:5000"
    if not current_app.config.get("BASE_URL"):
        click.echo("BASE_URL is not set: the link assumes `make run`'s address.", err=True)
    with current_app.test_request_context("/", base_url=base):
        return url_for("account.reset_password", token=secret, _external=True)


@keysmith.command("expiring")
def expiring() -> None:
    """For cron: audit `token.expiring` 7 days ahead (once per token) and queue its webhooks."""
    noted = hygiene.notify_expiring()
    db.session.commit()
    click.echo(
        f"{noted} token(s) expiring within 7 days newly noted; "
        "their token.expiring events go out with `flask keysmith deliver`."
    )


PRUNE_EVERY_SECONDS = 3600


@keysmith.command("deliver")
@click.option("--once", is_flag=True, help="Send what is due now, then exit (for cron).")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between polls."
)
def deliver(once: bool, interval: float) -> None:
    """Post due webhook deliveries (signed, retried for 3 days); runs until stopped."""
    if once:
        webhooks.prune()
        total = webhooks.DeliveryRun()
        while (run := webhooks.deliver_due()).attempted:
            total.succeeded += run.succeeded
            total.retrying += run.retrying
            total.failed += run.failed
        click.echo(
            f"{total.succeeded} delivered, {total.retrying} to retry, {total.failed} given up."
        )
        return
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    click.echo("Delivering webhooks; stop with Ctrl-C or SIGTERM.")
    pruned_at = 0.0
    try:
        while not stopping:
            try:
                if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                    webhooks.prune()
                    pruned_at = time.monotonic()
                run = webhooks.deliver_due()
            except Exception:  # the database away for a moment: log, wait, try again
                db.session.rollback()
                logging.getLogger(__name__).exception("Webhook delivery pass failed")
                run = webhooks.DeliveryRun()
            if not run.attempted:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        db.session.remove()
    click.echo("Webhook delivery stopped.")


def init_app(app: Flask) -> None:
    app.cli.add_command(keysmith)
