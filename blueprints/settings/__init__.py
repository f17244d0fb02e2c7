"""Settings → Members and Key policy (SPEC §1, §6).

Each page acts on the current organization only; members of another organization are 404.
The same URL answers htmx with the swapped region and a plain form post with a whole page.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import login_required

from blueprints.settings.forms import ROLE_LABELS, InviteForm, PolicyForm, RoleForm, role_choices
from blueprints.web import (
    confirm_access,
    current_actor,
    current_membership,
    current_org,
    is_htmx,
    role_required,
    show_errors,
)
from extensions import db
from models import Membership
from services import members as member_service
from services import policy as policy_service
from services.actor import Actor
from services.errors import Conflict, ValidationFailed

bp = Blueprint("settings", __name__, url_prefix="/settings")

NO_STORE = {"Cache-Control": "no-store"}


@bp.app_context_processor
def role_labels():
    return {"role_labels": ROLE_LABELS}


# ---------------------------------------------------------------- members


def _invite_form(actor: Actor) -> InviteForm:
    form = InviteForm()
    form.role.choices = role_choices(member_service.grantable_roles(actor))
    return form


def _invites_context(actor: Actor, form: InviteForm | None = None, **extra):
    org = actor.organization
    return {
        "actor": actor,
        "is_manager": member_service.can_manage_members(actor),
        "invite_form": form or _invite_form(actor),
        "invites": list(db.session.scalars(member_service.pending_invites(org))),
        **extra,
    }


def _row_context(actor: Actor, member: Membership, counts: dict[int, int], owners: int, error=None):
    return {
        # The last owner can be neither demoted nor removed, so offer neither.
        "sole_owner": member.role == "owner" and owners <= 1,
        "m": member,
        "live_tokens": counts.get(member.user_id, 0),
        "can_act": member_service.can_act_on(actor, member),
        "grantable": member_service.grantable_roles(actor),
        "row_error": error,
        "actor": actor,
        "is_manager": member_service.can_manage_members(actor),
    }


def _members_page(actor: Actor, *, status: int = 200, row_errors=None, headers=None, **extra):
    org = actor.organization
    counts = member_service.live_token_counts(org)
    memberships = list(db.session.scalars(member_service.members_of(org)))
    owners = sum(m.role == "owner" for m in memberships)
    rows = [
        _row_context(actor, m, counts, owners, (row_errors or {}).get(m.id)) for m in memberships
    ]
    context = _invites_context(actor, **extra)
    return render_template("settings/members.html", rows=rows, **context), status, headers or {}


@bp.get("/members")
@login_required
def members():
    return _members_page(current_actor())


@bp.post("/members")
@login_required
@role_required("admin")
def invite():
    # Inviting gives someone a role: sudo mode, as changing a role does (an invite to owner
    # from a stale session would otherwise skip it).
    if (confirm := confirm_access()) is not None:
        return confirm
    actor = current_actor()
    form = _invite_form(actor)
    # Let the service name a role above one's own, rather than WTForms' "not a valid choice".
    form.role.choices = role_choices(ROLE_LABELS)
    invite_link = None
    status = 400
    if form.validate_on_submit():
        try:
            invite, secret = member_service.invite(
                actor.organization, actor, email=form.email.data, role=form.role.data
            )
        except ValidationFailed as exc:
            db.session.rollback()
            show_errors(form, exc)
        else:
            db.session.commit()
            invite_link = url_for("invites.accept", token=secret, _external=True)
            invited = {"email": invite.email, "role": invite.role, "expires_at": invite.expires_at}
            status = 200
            form = _invite_form(actor)
            form.email.data = ""
            form.role.data = form.role.default  # the next invite starts from Member again
    form.role.choices = role_choices(member_service.grantable_roles(actor))
    extra = {"invite_link": invite_link, "invited": invited if invite_link else None}
    # The link is a credential: never cache the response that carries it.
    headers = NO_STORE if invite_link else {}
    if is_htmx():
        html = render_template("settings/_invites.html", **_invites_context(actor, form, **extra))
        return html, 200, headers
    return _members_page(actor, status=status, headers=headers, invite_form=form, **extra)


@bp.post("/members/invites/<id:invite_id>/cancel")
@login_required
@role_required("admin")
def cancel_invite(invite_id: int):
    actor = current_actor()
    invite = member_service.get_invite_or_404(actor.organization, invite_id)
    try:
        member_service.cancel_invite(invite, actor)
    except Conflict as exc:
        db.session.rollback()
        flash(exc.message, "danger")
    else:
        db.session.commit()
        flash(f"The invite for {invite.email} was cancelled; its link no longer works.", "info")
    if is_htmx():
        return render_template("settings/_invites.html", **_invites_context(actor))
    return redirect(url_for(".members"))


def _kept_tokens(stake: member_service.TokensAtStake) -> set[str]:
    """The held tokens the remover unticked. The form lists every held token it offered
    (`held`) and ticks those to revoke (`revoke`); a post that offers none revokes all."""
    offered = set(request.form.getlist("held"))
    ticked = set(request.form.getlist("revoke"))
    return {t.id for t in stake.held if t.id in offered and t.id not in ticked}


@bp.get("/members/<id:member_id>/role")
@login_required
@role_required("admin")
def confirm_role(member_id: int):
    """A demotion that would revoke tokens asks first, listing them (SPEC §1)."""
    actor = current_actor()
    member = member_service.get_member_or_404(actor.organization, member_id)
    role = request.args.get("role", "")
    if role not in ROLE_LABELS or not member_service.is_demotion(member, role):
        return redirect(url_for(".members"))
    return _demote_page(actor, member, role)


def _demote_page(actor: Actor, member: Membership, role: str, error=None, status: int = 200):
    stake = member_service.tokens_at_stake(member, new_role=role)
    return render_template(
        "settings/demote.html",
        m=member,
        role=role,
        stake=stake,
        can_act=member_service.can_act_on(actor, member),
        error=error,
    ), status


@bp.post("/members/<id:member_id>/role")
@login_required
@role_required("admin")
def change_role(member_id: int):
    if (confirm := confirm_access()) is not None:  # sudo mode
        return confirm
    actor = current_actor()
    member = member_service.get_member_or_404(actor.organization, member_id)
    form = RoleForm()
    error, old_role = None, member.role
    new_role = request.form.get("role", "")
    if (
        form.validate_on_submit()
        and member_service.can_act_on(actor, member)
        and new_role in member_service.grantable_roles(actor)
        and member_service.is_demotion(member, new_role)
        and not request.form.get("confirmed")
        and member_service.tokens_at_stake(member, new_role=new_role).all
    ):
        # Tokens would be revoked: show them and ask, as removal does.
        confirm = url_for(".confirm_role", member_id=member.id, role=new_role)
        if is_htmx():
            return "", 200, {"HX-Redirect": confirm}
        return redirect(confirm)
    if not form.validate_on_submit():
        error = "; ".join(e for errs in form.errors.values() for e in errs) or "Choose a role."
    else:
        try:
            stake = member_service.tokens_at_stake(member, new_role=new_role)
            member_service.change_role(member, actor, role=form.role.data, keep=_kept_tokens(stake))
        except (ValidationFailed, Conflict) as exc:
            db.session.rollback()
            error = " ".join(exc.details.values()) or exc.message
        else:
            db.session.commit()
    if error is not None:
        db.session.refresh(member)
    if member.user_id == actor.user_id and error is None and member.role != old_role:
        # Demoting oneself changes what the page may show: reload it whole.
        if is_htmx():
            return "", 200, {"HX-Redirect": url_for(".members")}
        flash(f"Your role is now {ROLE_LABELS[member.role]}.", "info")
        return redirect(url_for(".members"))
    if is_htmx():
        org = actor.organization
        counts = member_service.live_token_counts(org)
        context = _row_context(actor, member, counts, member_service.owner_count(org), error)
        return render_template("settings/_member_row.html", **context, saved=error is None)
    if error is not None:
        return _members_page(actor, status=400, row_errors={member.id: error})
    flash(f"{member.user.name} is now {ROLE_LABELS[member.role]}.", "success")
    return redirect(url_for(".members"))


@bp.get("/members/<id:member_id>/remove")
@login_required
@role_required("admin")
def confirm_remove(member_id: int):
    actor = current_actor()
    member = member_service.get_member_or_404(actor.organization, member_id)
    return _remove_page(actor, member)


def _remove_page(actor: Actor, member: Membership, error: str | None = None, status: int = 200):
    stake = member_service.tokens_at_stake(member)
    return render_template(
        "settings/remove.html",
        m=member,
        stake=stake,
        tokens=stake.created,
        can_act=member_service.can_act_on(actor, member),
        error=error,
        is_self=member.user_id == actor.user_id,
    ), status


def _tokens_phrase(count: int) -> str:
    return f"{count} token{'s' if count != 1 else ''}"


@bp.post("/members/<id:member_id>/remove")
@login_required
@role_required("admin")
def remove(member_id: int):
    if (confirm := confirm_access()) is not None:  # sudo mode
        return confirm
    actor = current_actor()
    member = member_service.get_member_or_404(actor.organization, member_id)
    name, is_self = member.user.name, member.user_id == actor.user_id
    stake = member_service.tokens_at_stake(member)
    kept = _kept_tokens(stake)
    try:
        revoked = member_service.remove_member(member, actor, keep=kept)
    except Conflict as exc:
        db.session.rollback()
        return _remove_page(actor, member, exc.message, 400)
    db.session.commit()
    created, held = len(stake.created), len(revoked) - len(stake.created)
    message = (
        f"{name} was removed. {_tokens_phrase(created)} they created "
        f"{'were' if created != 1 else 'was'} revoked"
    )
    if stake.held:
        message += f", and {_tokens_phrase(held)} whose secrets they held"
        if kept:
            message += f" ({_tokens_phrase(len(kept))} kept, as you chose)"
    flash(message + ".", "success")
    if is_self:
        return redirect(url_for("main.index"))
    return redirect(url_for(".members"))


# ---------------------------------------------------------------- key policy


@bp.route("/policy", methods=["GET", "POST"])
@login_required
def policy():
    membership = current_membership()
    actor = current_actor()
    editable = policy_service.can_change_policy(actor)
    if request.method == "POST" and not editable:
        abort(403, "Only owners and admins can change the key policy.")
    if request.method == "POST" and (confirm := confirm_access()) is not None:  # sudo mode
        return confirm
    org = current_org()
    form = PolicyForm(obj=org if request.method == "GET" else None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.validate_on_submit():
            try:
                changes = policy_service.update_policy(
                    org,
                    actor,
                    max_live_tokens=form.max_live_tokens.data,
                    max_lifetime_days=form.max_lifetime_days.data,
                    allow_never_expires=bool(form.allow_never_expires.data),
                    rate_limit=form.rate_limit.data,
                    require_two_factor=bool(form.require_two_factor.data),
                )
            except ValidationFailed as exc:
                db.session.rollback()
                show_errors(form, exc)
            else:
                db.session.commit()
                flash(
                    "Key policy saved." if changes else "Nothing changed.",
                    "success" if changes else "info",
                )
                return redirect(url_for(".policy"))
    return (
        render_template(
            "settings/policy.html",
            form=form,
            editable=editable,
            policy=policy_service.policy_of(org),
            role=membership.role if membership else None,
        ),
        status,
    )
