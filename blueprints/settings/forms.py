"""Forms of Settings: invite a member, change a role, the key policy."""

from wtforms import BooleanField, EmailField, IntegerField, SelectField, StringField, URLField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional

from blueprints.forms import Form
from models import ROLES
from services.policy import MAX_LIFETIME_DAYS, MAX_LIVE_TOKENS

ROLE_LABELS = {
    "owner": "Owner",
    "admin": "Admin",
    "member": "Member",
    "viewer": "Viewer",
}


def role_choices(roles) -> list[SelectChoice]:
    return [SelectChoice(role, ROLE_LABELS[role]) for role in roles]


class InviteForm(Form):
    email = EmailField(
        "Email",
        validators=[
            DataRequired("Email is required."),
            Email("Enter a valid email address.", check_deliverability=False),
            Length(max=254),
        ],
    )
    role = SelectField("Role", choices=role_choices(ROLES), default="member")


class RoleForm(Form):
    role = SelectField("Role", choices=role_choices(ROLES))


class PolicyForm(Form):
    max_live_tokens = IntegerField(
        "Maximum live tokens",
        validators=[
            InputRequired("Enter a number."),
            NumberRange(*MAX_LIVE_TOKENS, message="Enter a whole number from 1 to 100,000."),
        ],
        description="Across both environments. Creating one more is refused.",
    )
    max_lifetime_days = IntegerField(
        "Maximum lifetime (days)",
        validators=[
            InputRequired("Enter a number."),
            NumberRange(*MAX_LIFETIME_DAYS, message="Enter a whole number from 1 to 3,650."),
        ],
        description="The longest expiry a new token may have.",
    )
    allow_never_expires = BooleanField("Allow tokens that never expire")
    rate_limit = StringField(
        "Default rate limit",
        validators=[DataRequired("A default rate limit is required."), Length(max=200)],
        description="Per token, e.g. 1000/minute;100/second. Tokens may override it.",
    )
    webhook_url = URLField(
        "Webhook URL (optional)",
        validators=[Optional(), Length(max=500)],
        description="Where Keysmith posts token events. http:// or https://.",
    )
