"""Who is acting: a signed-in member or an API token, with where the request came from."""

from __future__ import annotations

from dataclasses import dataclass

from models import ROLE_SCOPES, ApiToken, Membership, Organization, User

# What each member role may do (SPEC §1), in the vocabulary of API scopes.
MEMBER_SCOPES = {
    "owner": ROLE_SCOPES["admin"],
    "admin": ROLE_SCOPES["admin"],
    "member": ROLE_SCOPES["writer"],
    "viewer": ROLE_SCOPES["viewer"],
}


@dataclass(frozen=True)
class Actor:
    """The acting party. For a token, `membership` is its owner's membership *now*."""

    organization: Organization
    membership: Membership | None
    token: ApiToken | None = None
    ip: str | None = None
    user_agent: str | None = None
    # How a system actor (no person, no token) is named in the audit log: "cli", "leak report".
    system_label: str = "system"
    # The token authenticated with its previous secret, still inside its rotation grace:
    # it may read, never change (SPEC §2).
    previous_secret: bool = False

    @property
    def user(self) -> User | None:
        return self.membership.user if self.membership else None

    @property
    def user_id(self) -> int | None:
        return self.membership.user_id if self.membership else None

    @property
    def label(self) -> str:
        if self.token is not None:
            return self.token.name
        return self.membership.user.email if self.membership else self.system_label

    @property
    def kind(self) -> str:
        if self.token is not None:
            return "token"
        return "user" if self.membership else "system"

    @property
    def member_role(self) -> str | None:
        return self.membership.role if self.membership else None

    @property
    def scopes(self) -> frozenset[str]:
        """What this actor may do now: a token never exceeds its owner's current role."""
        if self.membership is None:
            return frozenset() if self.token is not None else ROLE_SCOPES["admin"]
        allowed = MEMBER_SCOPES[self.membership.role]
        if self.token is not None:
            allowed = allowed & self.token.effective_scopes
        if self.previous_secret:
            allowed = frozenset(scope for scope in allowed if scope.endswith(":read"))
        return allowed

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def manages_all_tokens(self) -> bool:
        """Owners and admins act on anyone's token; members only on their own (SPEC §1)."""
        return self.membership is None or self.membership.role in ("owner", "admin")

    @property
    def environment(self) -> str | None:
        return self.token.environment if self.token is not None else None


def system_actor(
    organization: Organization,
    label: str = "system",
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Actor:
    """For the CLI, cron jobs and the leak reporter: no person, every permission."""
    return Actor(
        organization=organization,
        membership=None,
        ip=ip,
        user_agent=user_agent,
        system_label=label,
    )
