"""Connections → API tokens (SPEC §3). Placeholder until the token page lands."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("tokens", __name__, url_prefix="/connections/api-tokens")


@bp.get("")
@login_required
def index():
    return render_template("tokens/index.html")
