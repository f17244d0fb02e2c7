"""The JSON API, /api/v1 (SPEC §4), authenticated by the tokens themselves."""

from flask import Blueprint

from extensions import csrf

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # bearer tokens, never cookies, authenticate the API
