"""`flask keysmith ...`: operator commands that script a fresh install, through the services."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from extensions import db
from models import Membership, Organization
from services import accounts
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
    org = Organization(name=organization, rate_limit=current_app.config["RATE_LIMIT_DEFAULT"])
    db.session.add(org)
    db.session.flush()
    db.session.add(Membership(organization_id=org.id, user_id=user.id, role="owner"))
    db.session.commit()
    click.echo(f"Created organization {org.id} ({org.name}), owned by {user.email}.")


def init_app(app: Flask) -> None:
    app.cli.add_command(keysmith)
