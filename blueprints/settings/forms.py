"""Forms of Settings: invite a member, change a role, the key policy."""

from wtforms import BooleanField, EmailField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length

from blueprints.forms import Form
from models import ROLES

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
    # Checked by the policy service, which names every wrong field at once.
    max_live_tokens = StringField(
        "Maximum live tokens",
        render_kw={"inputmode": "numeric"},
        description="Across both environments. Creating one more is refused.",
    )
    max_lifetime_days = StringField(
        "Maximum lifetime (days)",
        render_kw={"inputmode": "numeric"},
        description="The longest expiry a new token may have.",
    )
    allow_never_expires = BooleanField("Allow tokens that never expire")
    require_two_factor = BooleanField("Require two-factor sign-in for every member")
    rate_limit = StringField(
        "Default rate limit",
        description="Per token, e.g. 1000/minute;100/second. It applies at once to every "
        "token without a limit of its own.",
    )
