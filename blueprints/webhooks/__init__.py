"""Connections → Webhooks (SPEC §9): endpoints, their signing secrets and deliveries.

Owners and admins only: members and viewers see neither URLs nor secrets. Views load
through services.webhooks.get_endpoint_or_404 (scoped to the current organization), call
one service, commit once, then render; to htmx they answer the swapped region alone.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from blueprints.web import (
    client_ip,
    confirm_access,
    current_actor,
    current_membership,
    current_org,
    is_htmx,
    show_errors,
)
from blueprints.webhooks.forms import EVENT_LABELS, EndpointForm, RevealForm
from extensions import db
from models import WebhookEndpoint, utcnow
from services import accounts, throttle, webhooks
from services.errors import ValidationFailed

bp = Blueprint("webhooks", __name__, url_prefix="/connections/webhooks")

RECENT_DELIVERIES = 50
# The deliveries list refreshes itself (htmx) while an attempt is due this soon.
POLL_WITHIN = timedelta(minutes=1)
NO_STORE = {"Cache-Control": "no-store"}


@bp.after_request
def no_store(response):
    # Pages here carry URLs (secrets in themselves, for Slack-style hooks) and secrets.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_context_processor
def failing_webhooks() -> dict:
    """For the banner in base.html: owners and admins see endpoints that were given up on.
    A function, so pages that show no banner run no query."""

    def count() -> int:
        membership = current_membership() if current_user.is_authenticated else None
        if membership is None or membership.role not in ("owner", "admin"):
            return 0
        return len(webhooks.failing_endpoints(membership.organization))

    return {"failing_webhook_count": count, "event_labels": EVENT_LABELS}


def _require_manager() -> None:
    if not webhooks.can_manage(current_actor()):
        abort(403, "Only owners and admins manage webhooks.")


def _endpoint_form(endpoint: WebhookEndpoint | None = None) -> EndpointForm:
    """The form as saved (never the request's own fields: after a roll or a reveal, the
    request holds only its CSRF token). Views with a submitted form pass that one."""
    if endpoint is None:
        return EndpointForm(formdata=None)
    return EndpointForm(formdata=None, obj=endpoint)


def _index(*, form=None, secret=None, secret_endpoint=None, status=200, fragment=False):
    organization = current_org()
    manager = webhooks.can_manage(current_actor())
    context = {
        "manager": manager,
        "endpoints": list(db.session.scalars(webhooks.endpoints_of(organization)))
        if manager
        else [],
        "last": webhooks.last_deliveries(organization) if manager else {},
        "form": form or _endpoint_form(),
        "secret": secret,
        "secret_endpoint": secret_endpoint,
        "role": current_membership().role,
    }
    template = "webhooks/_region.html" if fragment else "webhooks/index.html"
    return render_template(template, **context), status


@bp.get("")
@login_required
def index():
    return _index(fragment=is_htmx())


@bp.post("")
@login_required
def create():
    _require_manager()
    if (confirm := confirm_access()) is not None:  # sudo mode (SPEC §1)
        return confirm
    form = EndpointForm()
    if form.validate():
        try:
            endpoint, secret = webhooks.create_endpoint(
                current_org(),
                current_actor(),
                url=form.url.data,
                events=form.events.data,
                enabled=bool(form.enabled.data),
            )
        except (ValidationFailed, webhooks.WebhookLimitReached) as error:
            db.session.rollback()
            show_errors(form, error)
        else:
            db.session.commit()
            # 200 with the secret, never a redirect: it may not pass through a session.
            return _index(secret=secret, secret_endpoint=endpoint, fragment=is_htmx())
    return _index(form=form, status=400, fragment=is_htmx())


def _deliveries(endpoint: WebhookEndpoint, notice: str | None = None) -> dict:
    deliveries = list(db.session.scalars(webhooks.deliveries_of(endpoint).limit(RECENT_DELIVERIES)))
    soon = utcnow() + POLL_WITHIN
    polling = any(
        d.status == "pending" and (d.next_attempt_at is None or d.next_attempt_at <= soon)
        for d in deliveries
    )
    return {"endpoint": endpoint, "deliveries": deliveries, "polling": polling, "notice": notice}


def _show(endpoint, *, form=None, reveal_form=None, secret=None, rolled=False, status=200):
    return render_template(
        "webhooks/show.html",
        form=form or _endpoint_form(endpoint),
        reveal_form=reveal_form or RevealForm(formdata=None),
        secret=secret,
        rolled=rolled,
        previous_until=endpoint.previous_secret_expires_at
        if len(webhooks.signing_secrets(endpoint)) > 1
        else None,
        **_deliveries(endpoint),
    ), status


def _endpoint(endpoint_id: str) -> WebhookEndpoint:
    _require_manager()
    return webhooks.get_endpoint_or_404(current_org(), endpoint_id)


@bp.get("/<endpoint_id>")
@login_required
def show(endpoint_id: str):
    return _show(_endpoint(endpoint_id))


@bp.post("/<endpoint_id>")
@login_required
def update(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if (confirm := confirm_access()) is not None:  # sudo mode (SPEC §1)
        return confirm
    form = EndpointForm()
    if form.validate():
        try:
            changes = webhooks.update_endpoint(
                endpoint,
                current_actor(),
                url=form.url.data,
                events=form.events.data,
                enabled=bool(form.enabled.data),
            )
        except ValidationFailed as error:
            db.session.rollback()
            show_errors(form, error)
        else:
            db.session.commit()
            flash("Endpoint saved." if changes else "Nothing changed.", "success")
            return redirect(url_for(".show", endpoint_id=endpoint.id), 303)
    return _show(webhooks.get_endpoint_or_404(current_org(), endpoint_id), form=form, status=400)


@bp.post("/<endpoint_id>/delete")
@login_required
def delete(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if (confirm := confirm_access()) is not None:  # sudo mode (SPEC §1)
        return confirm
    webhooks.delete_endpoint(endpoint, current_actor())
    db.session.commit()
    flash("Endpoint deleted. Its pending deliveries will not be sent.", "success")
    return redirect(url_for(".index"), 303)


@bp.post("/<endpoint_id>/roll")
@login_required
def roll(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if (confirm := confirm_access()) is not None:  # sudo mode (SPEC §1)
        return confirm
    secret = webhooks.roll_secret(endpoint, current_actor())
    db.session.commit()
    return _show(endpoint, secret=secret, rolled=True)


@bp.post("/<endpoint_id>/end-overlap")
@login_required
def end_overlap(endpoint_id: str):
    """The previous secret stops signing now instead of when its 24 hours end."""
    endpoint = _endpoint(endpoint_id)
    if (confirm := confirm_access()) is not None:  # sudo mode (SPEC §1)
        return confirm
    if webhooks.end_previous_secret(endpoint, current_actor()):
        flash("The previous secret no longer signs. Only the current one does.", "success")
    db.session.commit()
    return redirect(url_for(".show", endpoint_id=endpoint.id), 303)


@bp.post("/<endpoint_id>/reveal")
@login_required
def reveal(endpoint_id: str):
    """The secret again, only to someone who has just typed their password again."""
    endpoint = _endpoint(endpoint_id)
    form = RevealForm()
    if not form.validate():
        return _show(endpoint, reveal_form=form, status=400)
    # Each try counts with sign-ins before the password is checked (given back if right):
    # the same guessing, the same throttle.
    attempt = throttle.begin(current_user.email, client_ip(), known_device=True)
    if attempt.refused:
        form.password.errors = [
            f"Too many wrong passwords. Try again in {attempt.retry_after} seconds."
        ]
        return _show(endpoint, reveal_form=form, status=429)
    if accounts.password_matches(current_user, form.password.data or ""):
        throttle.succeeded(attempt)
        secret = webhooks.reveal_secret(endpoint, current_actor())
        db.session.commit()
        return _show(endpoint, secret=secret)
    form.password.errors = ["That is not your password."]
    return _show(endpoint, reveal_form=form, status=400)


def _deliveries_answer(endpoint: WebhookEndpoint, message: str):
    if is_htmx():
        return render_template("webhooks/_deliveries.html", **_deliveries(endpoint, message))
    flash(message, "success")
    return redirect(url_for(".show", endpoint_id=endpoint.id), 303)


def _too_many_sends(endpoint: WebhookEndpoint):
    """None if the organization may queue another send now; else the 429 answer (the
    deliveries region to htmx, which swaps it in place; the endpoint's page otherwise)."""
    attempt = throttle.begin_webhook_send(endpoint.organization_id)
    if not attempt.refused:
        return None
    message = (
        "Too many test events and redeliveries in this organization: at most "
        f"{current_app.config['WEBHOOK_SEND_LIMIT']}. Try again in {attempt.retry_after} seconds."
    )
    headers = {"Retry-After": str(attempt.retry_after)}
    if is_htmx():
        context = _deliveries(endpoint, message)
        return render_template("webhooks/_deliveries.html", **context, refused=True), 429, headers
    flash(message, "danger")
    page, _ = _show(endpoint)
    return page, 429, headers


@bp.get("/<endpoint_id>/deliveries")
@login_required
def deliveries(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if not is_htmx():
        return redirect(url_for(".show", endpoint_id=endpoint.id))
    return render_template("webhooks/_deliveries.html", **_deliveries(endpoint))


@bp.post("/<endpoint_id>/test")
@login_required
def send_test(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if (refused := _too_many_sends(endpoint)) is not None:
        return refused
    webhooks.send_test_event(endpoint, current_actor())
    db.session.commit()
    return _deliveries_answer(endpoint, "Test event queued: it goes out in a moment.")


@bp.post("/<endpoint_id>/deliveries/<delivery_id>/redeliver")
@login_required
def redeliver(endpoint_id: str, delivery_id: str):
    endpoint = _endpoint(endpoint_id)
    delivery = webhooks.get_delivery_or_404(endpoint, delivery_id)
    if (refused := _too_many_sends(endpoint)) is not None:
        return refused
    webhooks.redeliver(delivery, current_actor())
    db.session.commit()
    return _deliveries_answer(endpoint, f"{delivery.event.type} queued for redelivery.")
