"""The token page's forms: CSRF and rendering. The rules live in services/tokens.py."""

from __future__ import annotations

from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from blueprints.forms import Form
from models import SCOPES, Organization
from services import tokens

ROLE_CHOICES = [("admin", "Admin"), ("writer", "Writer"), ("viewer", "Viewer")]
TYPE_CHOICES = [
    ("generic", "Generic"),
    ("ci", "CI"),
    ("integration", "Integration"),
    ("onboarding", "Onboarding"),
]
EXPIRY_LABELS = {
    "30": "30 days",
    "60": "60 days",
    "90": "90 days",
    "180": "180 days",
    "365": "1 year",
    tokens.EXPIRY_CUSTOM: "Custom date…",
    tokens.EXPIRY_NEVER: "Never",
}
ALLOWLIST_HINT = (
    "Addresses or CIDR ranges, one per line or separated by commas. "
    "Empty: any address may use the token."
)
GRACE_CHOICES = [
    ("0", "None"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    (str(7 * 86400), "7 days"),
]


def _choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class CreateTokenForm(Form):
    # Choices are not checked here: the service checks them and names the field that is wrong.
    name = StringField(
        "Name",
        description="Say where it is used, e.g. “GitHub Actions deploy”.",
        render_kw={"maxlength": tokens.NAME_MAX, "autocomplete": "off", "required": True},
    )
    environment = HiddenField()
    role = SelectField(
        "Access",
        choices=_choices(ROLE_CHOICES),
        default="writer",
        validate_choice=False,
        description="Admin: everything. Writer: read, and change tokens. Viewer: read only.",
    )
    scopes = CheckboxesField(
        "Scopes",
        choices=_choices([(s, s) for s in SCOPES]),
        validate_choice=False,
        description="Optional. Leave empty for everything the access level allows.",
    )
    type = SelectField(
        "Type", choices=_choices(TYPE_CHOICES), default="generic", validate_choice=False
    )
    expires_in_days = SelectField("Expires", default="90", validate_choice=False)
    expires_at = DateField("Expiry date", validators=[Optional()])
    allowed_ips = TextAreaField(
        "Allowed IPs (optional)",
        description=ALLOWLIST_HINT,
        render_kw={"rows": 2, "spellcheck": "false", "placeholder": "203.0.113.7, 10.0.0.0/8"},
    )

    def offer_roles(self, roles: list[str]) -> None:
        """Only the roles this person may give (a member gives at most Writer)."""
        self.role.choices = _choices([(v, label) for v, label in ROLE_CHOICES if v in roles])

    def offer_expiries(self, organization: Organization) -> None:
        self.expires_in_days.choices = _choices(
            [(value, EXPIRY_LABELS[value]) for value in tokens.expiry_choices(organization)]
        )


class RenameForm(Form):
    name = StringField("New name", render_kw={"maxlength": tokens.NAME_MAX, "required": True})
    environment = HiddenField()


KEEP_EXPIRY = ""  # the rotate form's "keep the current expiry"


class RotateForm(Form):
    """Rotate (and optionally renew) a token. SPEC §2: the grace preselects 24 hours, and
    "none" asks first (`stop_old_secret`); an expired token must get a new expiry."""

    grace_period_seconds = SelectField(
        "Old secret keeps working for",
        choices=_choices(GRACE_CHOICES),
        default="86400",
        validate_choice=False,
    )
    stop_old_secret = BooleanField("Yes, stop the old secret now")
    expires_in_days = SelectField("Expiry", default=KEEP_EXPIRY, validate_choice=False)
    expires_at = DateField("Expiry date", validators=[Optional()])
    environment = HiddenField()

    def offer_expiries(self, organization: Organization, *, keep: str | None) -> None:
        """`keep` describes the current expiry; None (an expired token) leaves no such choice."""
        pairs = [(value, EXPIRY_LABELS[value]) for value in tokens.expiry_choices(organization)]
        if keep is not None:
            pairs.insert(0, (KEEP_EXPIRY, keep))
        elif self.expires_in_days.data == KEEP_EXPIRY:  # renewing: 90 days, or the nearest
            values = [value for value, _ in pairs]
            default = str(tokens.DEFAULT_EXPIRY_DAYS)
            self.expires_in_days.data = default if default in values else values[0]
        self.expires_in_days.choices = _choices(pairs)


class AllowlistForm(Form):
    allowed_ips = TextAreaField(
        "Allowed IPs",
        description=ALLOWLIST_HINT + " At most 50.",
        render_kw={"rows": 4, "spellcheck": "false", "placeholder": "203.0.113.7\n10.0.0.0/8"},
    )
