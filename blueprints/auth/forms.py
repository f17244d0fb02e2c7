from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length

from blueprints.forms import Form
from services.accounts import PASSWORD_HINT, PASSWORD_MIN


class SignupForm(Form):
    name = StringField(
        "Your name",
        validators=[DataRequired(), Length(max=100)],
        render_kw={"autocomplete": "name"},
    )
    email = EmailField(
        "Work email",
        validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)],
        render_kw={"autocomplete": "email"},
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired(),
            Length(
                min=PASSWORD_MIN, message=f"Password must be at least {PASSWORD_MIN} characters."
            ),
        ],
        description=PASSWORD_HINT,
        render_kw={"autocomplete": "new-password"},
    )
    organization = StringField(
        "Organization",
        validators=[DataRequired(), Length(max=100)],
        render_kw={"autocomplete": "organization"},
        description="Your company or team. You can invite teammates later.",
    )


class LoginForm(Form):
    email = EmailField(
        "Email",
        validators=[DataRequired(), Length(max=254)],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired(), Length(max=1000)],
        render_kw={"autocomplete": "current-password"},
    )


class TwoFactorForm(Form):
    code = StringField(
        "Authentication code",
        validators=[DataRequired("Type the code from your app."), Length(max=40)],
        description="The 6 digits your authenticator app shows, or one of your recovery codes.",
        render_kw={"autocomplete": "one-time-code", "inputmode": "text", "autocapitalize": "off"},
    )
