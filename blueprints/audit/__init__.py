"""Connections → Audit log (SPEC §5). Placeholder until the audit page lands."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("audit", __name__, url_prefix="/connections/audit-log")


@bp.get("")
@login_required
def index():
    return render_template("audit/index.html")
