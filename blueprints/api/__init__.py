"""The JSON API, /api/v1 (SPEC §4), authenticated by the tokens themselves."""

from flask import Blueprint

from blueprints.api import session as api_session
from blueprints.api.auth import rate_limit_key, rate_limit_value
from extensions import csrf, limiter

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # bearer tokens, never cookies, authenticate the API
# One bucket per token across every endpoint (per client address without a valid token).
limiter.shared_limit(rate_limit_value, scope="api", key_func=rate_limit_key)(bp)
# No session cookie is read or written on the API.
bp.record_once(lambda state: api_session.init_app(state.app))

from blueprints.api import limits, views  # noqa: E402, F401  (routes and hooks register on bp)
