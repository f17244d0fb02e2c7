"""CORS for /api/v1, off by default (SPEC §4): `CORS_ORIGINS` lists the origins whose pages
may call the API from a browser, with a token the page holds. Never with credentials: the
API reads no cookie, and a browser sends none to it cross-origin."""

from __future__ import annotations

from flask import Flask, request
from flask_cors import CORS

# What a browser script may send: the three ways to give the token, a JSON body, a retry key.
ALLOW_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "X-Request-Id"]
# What it may read besides the CORS-safelisted headers.
EXPOSE_HEADERS = [
    "X-Request-Id",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "Location",
    "Link",
    "WWW-Authenticate",
    "Idempotent-Replayed",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
PREFLIGHT_SECONDS = 600


def init_app(app: Flask) -> None:
    origins = app.config.get("CORS_ORIGINS") or []
    if not origins:
        return
    CORS(
        app,
        resources={r"/api/v1/*": {"origins": list(origins)}},
        supports_credentials=False,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        methods=METHODS,
        max_age=PREFLIGHT_SECONDS,
        send_wildcard=False,
        always_send=False,  # no Origin, no CORS headers: only browsers ask
        vary_header=True,
    )

    @app.after_request
    def vary_on_origin(response):
        # With one origin listed flask-cors leaves Vary out, yet the answer differs with and
        # without Origin: a shared cache must not hand one to the other.
        if request.path.startswith("/api/v1/"):
            response.vary.add("Origin")
        return response
