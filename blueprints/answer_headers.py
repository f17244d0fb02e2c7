"""What every answer carries, API and console alike, as WSGI middleware: outermost, so even
a refusal by another middleware (an unknown host) or the last-resort page carries it.

- `X-Request-Id` (SPEC §4): a client's own id is echoed when sane (services/request_ids.py),
  else a new one is made. gunicorn's access log prints it (`%({x-request-id}o)s`,
  gunicorn.conf.py and the Makefile) and each audit event a request causes keeps it.
- The security headers (`SECURITY_HEADERS`, and HSTS when served over HTTPS), unless the
  answer set its own.
- Headers the app left in the environ under `EXTRA` for this answer (the API's
  `X-RateLimit-*`, blueprints/api/limits.py).

Added here as plain pairs, on the list the server gets anyway: werkzeug's `Headers` checks
and copies every value it holds, which was a tenth of a whoami (issue 17).
"""

from __future__ import annotations

from flask import Flask

from services import request_ids

HEADER = "X-Request-Id"
# Headers for this answer that the app puts in the environ: a list of (name, value).
EXTRA = "keysmith.answer_headers"
# Nothing on Keysmith's pages needs these; a script injected somewhere cannot ask for them.
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
# On every answer, unless the view set its own.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
)
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
_OWN = frozenset(name.lower() for name, _ in (*SECURITY_HEADERS, HSTS))


class AnswerHeaders:
    def __init__(self, wsgi_app, app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.config = app.config

    def __call__(self, environ, start_response):
        request_id = request_ids.chosen(environ.get("HTTP_X_REQUEST_ID"))
        environ["HTTP_X_REQUEST_ID"] = request_id  # what the app sees is what is answered
        secure = self.config.get("SESSION_COOKIE_SECURE")  # served over HTTPS

        def start(status, headers, exc_info=None):
            answer, present = [], set()
            for pair in headers:
                name = pair[0].lower()
                if name != "x-request-id":
                    answer.append(pair)
                    if name in _OWN:
                        present.add(name)
            if len(present) < len(_OWN):
                answer.extend(p for p in SECURITY_HEADERS if p[0].lower() not in present)
                if secure and HSTS[0].lower() not in present:
                    answer.append(HSTS)
            if exc_info is None:  # not on a last-resort answer replacing the app's own
                answer.extend(environ.get(EXTRA, ()))
            answer.append((HEADER, request_id))
            return start_response(status, answer, exc_info)

        token = request_ids.set_current(request_id)
        try:
            return self.wsgi_app(environ, start)
        finally:
            request_ids.reset(token)


def init_app(app: Flask) -> None:
    app.wsgi_app = AnswerHeaders(app.wsgi_app, app)  # type: ignore[method-assign]
