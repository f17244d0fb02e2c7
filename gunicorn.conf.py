"""gunicorn reads this file from the working directory: `make run` and
`gunicorn 'app:create_app()'` both get it.

Neither the access log nor the error log shows a Keysmith secret: a token a client put in a
path or query, an invite or password-reset link, a session id (services/log_redaction.py).
"""

from gunicorn.glogging import Logger

from services.log_redaction import RedactSecrets, clean


class RedactingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        self.error_log.addFilter(RedactSecrets())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if isinstance(value, str):
                atoms[key] = clean(value)
        return atoms


logger_class = RedactingLogger

# A header as large as 64 KiB reaches Keysmith, so an enormous token in Authorization,
# X-API-Key or Basic gets the API's JSON 401 rather than gunicorn's own 431 page. (The
# request line keeps gunicorn's default, 4,094 bytes; docs/api.md says what lies beyond, as
# tests/test_gunicorn_limits.py measures it.)
limit_request_field_size = 64 * 1024

# Each line names the request's X-Request-Id (blueprints/answer_headers.py), so an id quoted in
# a support ticket finds its line; no query string (a client may put anything there).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)sB %(M)sms %({x-request-id}o)s'
