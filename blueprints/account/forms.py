"""Forms of Settings → Account: change the password, and set one through a reset link."""

from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from blueprints.forms import Form
from services.accounts import PASSWORD_HINT, PASSWORD_MIN


def _new_password(label: str = "New password") -> PasswordField:
    return PasswordField(
        label,
        validators=[
            DataRequired("Choose a new password."),
            Length(
                min=PASSWORD_MIN, message=f"Password must be at least {PASSWORD_MIN} characters."
            ),
        ],
        description=PASSWORD_HINT,
        render_kw={"autocomplete": "new-password"},
    )


def _confirm() -> PasswordField:
    return PasswordField(
        "Confirm new password",
        validators=[
            DataRequired("Type the new password again."),
            EqualTo("new_password", "The two new passwords differ."),
        ],
        render_kw={"autocomplete": "new-password"},
    )


class ChangePasswordForm(Form):
    current_password = PasswordField(
        "Current password",
        validators=[DataRequired("Your current password is required."), Length(max=1000)],
        render_kw={"autocomplete": "current-password"},
    )
    new_password = _new_password()
    confirm_password = _confirm()


class ResetPasswordForm(Form):
    new_password = _new_password()
    confirm_password = _confirm()


class EndSessionsForm(Form):
    """Only the CSRF token: one button."""


class ConfirmTwoFactorForm(Form):
    code = StringField(
        "Code from the app",
        validators=[DataRequired("Type the 6 digits the app shows."), Length(max=20)],
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )


class PasswordCheckForm(Form):
    current_password = PasswordField(
        "Current password",
        validators=[DataRequired("Your current password is required."), Length(max=1000)],
        render_kw={"autocomplete": "current-password"},
    )
