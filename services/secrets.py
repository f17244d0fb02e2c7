"""The token secret: its format, its checksum and its keyed hash (SPEC §2).

Format: ``ks_<env>_<id>_<random><checksum>``
  env       ``prod`` or ``sbx``
  id        16 base62 characters, the token's public id (random, ~95 bits)
  random    32 base62 characters (~190 bits of entropy)
  checksum  6 base62 characters: CRC32 of everything before it, zero-padded

A secret scanner finds our tokens with ``TOKEN_PATTERN`` (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Iterable
from typing import NamedTuple

from models import ENV_TAGS

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 16
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
PREFIX_ID_CHARS = 8
TAG_ENVS = {tag: env for env, tag in ENV_TAGS.items()}

TOKEN_REGEX = (
    rf"ks_(?:prod|sbx)_[0-9A-Za-z]{{{ID_LENGTH}}}_[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}"
)
# In free text: not preceded or followed by another token character.
TOKEN_PATTERN = re.compile(r"(?<![0-9A-Za-z_])" + TOKEN_REGEX + r"(?![0-9A-Za-z_])")
_EXACT = re.compile(
    rf"ks_(prod|sbx)_([0-9A-Za-z]{{{ID_LENGTH}}})_"
    rf"([0-9A-Za-z]{{{RANDOM_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def new_token_id() -> str:
    return _random_base62(ID_LENGTH)


def new_secret(environment: str, token_id: str) -> str:
    body = f"ks_{ENV_TAGS[environment]}_{token_id}_{_random_base62(RANDOM_LENGTH)}"
    return body + _checksum(body)


def visible_prefix(environment: str, token_id: str) -> str:
    return f"ks_{ENV_TAGS[environment]}_{token_id[:PREFIX_ID_CHARS]}"


class ParsedSecret(NamedTuple):
    environment: str
    token_id: str


def parse(secret: str) -> ParsedSecret | None:
    """The environment and id of a well-formed secret with a valid checksum, else None.

    Needs no database: a mistyped or truncated token stops here.
    """
    if len(secret) > 80:
        return None
    match = _EXACT.fullmatch(secret)
    if match is None:
        return None
    tag, token_id, random_part, checksum = match.groups()
    body = f"ks_{tag}_{token_id}_{random_part}"
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    return ParsedSecret(environment=TAG_ENVS[tag], token_id=token_id)


def hash_secret(secret: str, key: str) -> str:
    return hmac.new(key.encode(), secret.encode(), hashlib.sha256).hexdigest()


def matches(secret: str, stored_hash: str | None, keys: Iterable[str]) -> bool:
    """Constant-time comparison of the secret's HMAC under each key against the stored hash."""
    if not stored_hash:
        return False
    found = False
    for key in keys:
        # Keep comparing after a match so the time does not say which key matched.
        found |= hmac.compare_digest(hash_secret(secret, key), stored_hash)
    return found
