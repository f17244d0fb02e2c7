"""The base of every form on the site: Flask-WTF (CSRF), and no control characters."""

from __future__ import annotations

import unicodedata

from flask_wtf import FlaskForm
from wtforms import TextAreaField

CONTROL_MESSAGE = "May not contain control characters."
_MULTILINE_ALLOWED = {"\n", "\r", "\t"}


def has_control_characters(value: str, *, multiline: bool = False) -> bool:
    """A NUL byte or another control character: never meant, and PostgreSQL refuses NUL."""
    return any(
        unicodedata.category(ch) == "Cc" and not (multiline and ch in _MULTILINE_ALLOWED)
        for ch in value
    )


class Form(FlaskForm):
    """A text field holding a control character is that field's error, shown beside it."""

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        for field in self:
            values = field.data if isinstance(field.data, list) else [field.data]
            multiline = isinstance(field, TextAreaField)
            if any(
                isinstance(v, str) and has_control_characters(v, multiline=multiline)
                for v in values
            ):
                field.errors = [*field.errors, CONTROL_MESSAGE]
                valid = False
        return valid
