"""Per-token IP allowlists: addresses and CIDR ranges (as Stripe and Google restrict keys)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from services.errors import ValidationFailed

MAX_ENTRIES = 50


def parse_allowlist(value: object) -> list[str] | None:
    """Normalized networks, None for "from anywhere"; ValidationFailed names a bad entry.

    Accepts a list, or text with entries separated by commas, spaces or new lines.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed(details={"allowed_ips": "Give a list of addresses or CIDR ranges."})
    if len(value) > MAX_ENTRIES:
        raise ValidationFailed(details={"allowed_ips": f"At most {MAX_ENTRIES} entries."})
    networks: list[str] = []
    for entry in value:
        try:
            # ::ffff:127.0.0.1 is stored as 127.0.0.1/32: requests from an IPv4-mapped
            # address are matched as IPv4, so the mapped form alone would never match.
            network = _plain(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValidationFailed(
                details={"allowed_ips": f"{entry[:60]!r} is not an IP address or CIDR range."}
            ) from None
        if str(network) not in networks:
            networks.append(str(network))
    return networks or None


@lru_cache(maxsize=4096)
def _networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n) for n in allowed)


def ip_allowed(allowed: list[str] | tuple[str, ...] | None, ip: str | None) -> bool:
    """True if there is no allowlist, or the client address is inside one of its networks."""
    if not allowed:
        return True
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(allowed)))


def _plain(network: ipaddress.IPv4Network | ipaddress.IPv6Network):
    """An IPv4-mapped IPv6 range (::ffff:10.0.0.0/104) as the IPv4 range it is."""
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.network_address.ipv4_mapped
        and network.prefixlen >= 96
    ):
        mapped = network.network_address.ipv4_mapped
        return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def allowlist_within(inner: list[str] | tuple[str, ...] | None, outer: list[str] | tuple[str, ...]):
    """Is every address `inner` allows also allowed by `outer`? No allowlist (None, empty)
    allows every address, so it is within no allowlist at all."""
    if not inner:
        return False
    bounds = [_plain(n) for n in _networks(tuple(outer))]
    for network in (_plain(n) for n in _networks(tuple(inner))):
        if not any(
            network.version == bound.version and network.subnet_of(bound)  # type: ignore[arg-type]
            for bound in bounds
        ):
            return False
    return True
