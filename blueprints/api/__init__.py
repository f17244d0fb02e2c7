"""The JSON API, /api/v1 (SPEC §4), authenticated by the tokens themselves."""

from flask import Blueprint

from blueprints.api import cors as api_cors
from blueprints.api import session as api_session
from extensions import csrf

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # bearer tokens, never cookies, authenticate the API
# One bucket per token across every endpoint (per client address without a valid token),
# counted by blueprints/api/limits.py, not Flask-Limiter.
# No session cookie is read or written on the API.
bp.record_once(lambda state: api_session.init_app(state.app))
bp.record_once(lambda state: api_cors.init_app(state.app))  # CORS_ORIGINS; off by default

from blueprints.api import limits, views  # noqa: E402, F401  (routes and hooks register on bp)
