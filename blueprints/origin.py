"""Where Keysmith says it lives: absolute links never come from the client's Host header.

- `BASE_URL` set (production): a request for another host (Host, or X-Forwarded-Host when
  `PROXY_TRUST_HOST`) gets 400; every other request is handled as if it came to
  `BASE_URL`'s scheme, host and path, so `url_for(..., _external=True)` (API href and
  Location, invite links, openapi.json's servers) always names `BASE_URL`.
- `BASE_URL` unset (`make run`): only `TRUSTED_HOSTS` are answered, by default localhost,
  127.0.0.1 and [::1] on any port.
- `/healthz` answers for any host (a load balancer probes by address); it makes no links.
- Every request reaches Flask through this layer (it wraps `app.wsgi_app`), so Flask's own
  `TRUSTED_HOSTS` check, which normalised the whole list again on every request, is left
  off; the list is kept in `KEYSMITH_ALLOWED_HOSTS`.
- Behind proxies (`PROXY_COUNT`), only X-Forwarded-For is believed, unless
  `PROXY_TRUST_PROTO` / `PROXY_TRUST_HOST` say the proxy sets the others itself.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import host_is_trusted

LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]", "::1"]
UNTOUCHED_PATHS = ("/healthz",)


def allowed_hosts(config) -> list[str]:
    hosts = list(config.get("TRUSTED_HOSTS") or [])
    base = config.get("BASE_URL")
    if base:
        hosts.insert(0, urlsplit(base).hostname or "")
    return hosts or list(LOCAL_HOSTS)


class PublicOrigin:
    """WSGI middleware: refuse unknown hosts, then present the request as made to BASE_URL."""

    # Verdicts of host_is_trusted by Host header (it encodes every allowed name to IDNA on
    # each call); emptied when full, so a client sending many names costs only the check.
    KNOWN_HOSTS = 256

    def __init__(self, wsgi_app, *, base_url: str | None, hosts: list[str]) -> None:
        self.wsgi_app = wsgi_app
        self.hosts = hosts
        self.base = urlsplit(base_url) if base_url else None
        self._verdicts: dict[str, bool] = {}

    def trusted(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = host_is_trusted(host, self.hosts)
            if len(self._verdicts) >= self.KNOWN_HOSTS:
                self._verdicts = {}
            self._verdicts[host] = verdict
        return verdict

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if not self.trusted(host):
            if path not in UNTOUCHED_PATHS:
                return _refuse(path, start_response)
            environ["HTTP_HOST"] = self.hosts[0]  # a probe by address: as if to us
        if self.base is not None:
            environ["HTTP_HOST"] = self.base.netloc
            environ["wsgi.url_scheme"] = self.base.scheme
            environ["SERVER_NAME"] = self.base.hostname or ""
            environ["SERVER_PORT"] = str(
                self.base.port or (443 if self.base.scheme == "https" else 80)
            )
            prefix = self.base.path.rstrip("/")
            if prefix and not environ.get("SCRIPT_NAME", "").startswith(prefix):
                environ["SCRIPT_NAME"] = prefix + environ.get("SCRIPT_NAME", "")
        return self.wsgi_app(environ, start_response)


def _refuse(path: str, start_response):
    message = "This server does not answer for that host name."
    if path.startswith("/api/"):
        body = json.dumps(
            {"error": {"code": "validation_error", "message": message,
                       "details": {"Host": "Not a host this server answers for."}}}
        ).encode()  # fmt: skip
        content_type = "application/json"
    else:
        body = (
            "<!doctype html><title>Bad request</title><h1>Bad request</h1>"
            f"<p>{message} Operators: set BASE_URL (or TRUSTED_HOSTS) to the address "
            "people use.</p>"
        ).encode()
        content_type = "text/html; charset=utf-8"
    start_response(
        "400 BAD REQUEST",
        [("Content-Type", content_type), ("Content-Length", str(len(body))),
         ("Cache-Control", "no-store")],
    )  # fmt: skip
    return [body]


def init_app(app: Flask) -> None:
    config = app.config
    hosts = config["KEYSMITH_ALLOWED_HOSTS"] = allowed_hosts(config)
    # Checked once, here, for every request: Flask's own check would be the same, twice.
    config["TRUSTED_HOSTS"] = None
    wsgi = PublicOrigin(app.wsgi_app, base_url=config.get("BASE_URL"), hosts=hosts)
    count = config["PROXY_COUNT"]
    if count:
        wsgi = ProxyFix(
            wsgi,
            x_for=count,
            x_proto=count if config.get("PROXY_TRUST_PROTO") else 0,
            x_host=count if config.get("PROXY_TRUST_HOST") else 0,
        )
    app.wsgi_app = wsgi  # type: ignore[method-assign]
