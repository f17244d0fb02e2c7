"""gunicorn reads this file from the working directory: `make run` and
`gunicorn 'app:create_app()'` both get it.

The access log never shows a Keysmith secret, even one a client put in a path or query.
"""

import re

from gunicorn.glogging import Logger

# Broader than the scanners' pattern: a truncated or mistyped secret is redacted too.
_SECRET_LIKE = re.compile(r"ks_(?:prod|sbx)_[0-9A-Za-z_%]+")


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if isinstance(value, str) and "ks_" in value:
                atoms[key] = _SECRET_LIKE.sub("ks_[REDACTED]", value)
        return atoms


logger_class = RedactingLogger

# A header as large as 64 KiB reaches Keysmith, so an enormous token in Authorization,
# X-API-Key or Basic gets the API's JSON 401 rather than gunicorn's own 431 page. (The
# request line keeps gunicorn's maximum, 8,190 bytes; docs/api.md says what lies beyond.)
limit_request_field_size = 64 * 1024
