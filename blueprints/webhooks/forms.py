"""Forms of Connections → Webhooks: CSRF and rendering. The rules live in services/webhooks.py."""

from __future__ import annotations

from wtforms import BooleanField, PasswordField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.widgets import CheckboxInput, ListWidget

from blueprints.forms import Form
from models import EVENT_TYPES

EVENT_LABELS = {
    "token.created": "A token is created",
    "token.rotated": "A token is rotated",
    "token.revoked": "A token is revoked",
    "token.leaked": "A token is reported leaked",
    "token.expiring": "A token expires within 7 days",
    "member.removed": "A member is removed",
    "policy.updated": "The key policy changes",
}


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class EndpointForm(Form):
    # Checked by the service (SSRF rule included), which names every wrong field at once.
    url = StringField(
        "Endpoint URL",
        render_kw={"inputmode": "url", "autocomplete": "off", "spellcheck": "false"},
        description="Where Keysmith POSTs the events: https://… (never an address on this "
        "host or a private network).",
    )
    events = CheckboxesField(
        "Events",
        choices=[SelectChoice(t, t) for t in EVENT_TYPES],
        validate_choice=False,
        default=["token.created", "token.rotated", "token.revoked", "token.leaked"],
    )
    enabled = BooleanField("Enabled", default=True)


class RevealForm(Form):
    password = PasswordField("Your password", render_kw={"autocomplete": "current-password"})
