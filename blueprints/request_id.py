"""X-Request-Id on every answer, API and console (SPEC §4), as WSGI middleware: outermost,
so even a refusal by another middleware (an unknown host) carries it.

A client's own id is echoed when sane (services/request_ids.py), else a new one is made.
gunicorn's access log prints it (`%({x-request-id}o)s`, gunicorn.conf.py and the Makefile)
and each audit event a request causes keeps it.
"""

from __future__ import annotations

from flask import Flask

from services import request_ids

HEADER = "X-Request-Id"


class RequestId:
    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        request_id = request_ids.chosen(environ.get("HTTP_X_REQUEST_ID"))
        environ["HTTP_X_REQUEST_ID"] = request_id  # what the app sees is what is answered

        def start(status, headers, exc_info=None):
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        token = request_ids.set_current(request_id)
        try:
            return self.wsgi_app(environ, start)
        finally:
            request_ids.reset(token)


def init_app(app: Flask) -> None:
    app.wsgi_app = RequestId(app.wsgi_app)  # type: ignore[method-assign]
