"""The secret's format, its checksum, and TOKEN_PATTERN (documented in docs/security.md)."""

from __future__ import annotations

import math
import re

import pytest

from services import secrets
from services.secrets import TOKEN_PATTERN

ENVS = ("sandbox", "production")


def make(environment: str = "sandbox") -> str:
    return secrets.new_secret(environment, secrets.new_token_id())


@pytest.mark.parametrize("environment", ENVS)
def test_pattern_matches_every_token_we_make(environment):
    tag = "sbx" if environment == "sandbox" else "prod"
    for _ in range(2000):
        secret = make(environment)
        assert TOKEN_PATTERN.fullmatch(secret), secret
        assert secret.startswith(f"ks_{tag}_")
        parsed = secrets.parse(secret)
        assert parsed is not None and parsed.environment == environment


def test_pattern_finds_tokens_in_text_where_a_scanner_meets_them():
    secret = make("production")
    for text in (
        f"export KEYSMITH_TOKEN={secret}\n",
        f'{{"token": "{secret}"}}',
        f"Authorization: Bearer {secret}",
        f"curl -u x:{secret} https://example.com",
        f"'{secret}'",
        f"{secret}",
        f"token={secret}&x=1",
    ):
        assert TOKEN_PATTERN.findall(text) == [secret], text


def test_pattern_matches_nothing_embedded_in_a_larger_word():
    secret = make()
    for text in (f"x{secret}", f"{secret}x", f"_{secret}", f"{secret}_", f"9{secret}9"):
        assert TOKEN_PATTERN.search(text) is None, text


def test_pattern_refuses_truncations_extensions_and_other_prefixes():
    secret = make()
    body = secret[len("ks_sbx_") :]
    near_misses = [
        secret[:-1],
        secret[:-6],
        secret[1:],
        "ks_dev_" + body,
        "ks_live_" + body,
        "sk_sbx_" + body,
        "KS_SBX_" + body,
        "ks-sbx-" + body.replace("_", "-"),
        secret.replace("_", "", 1),
        "ks_sbx_" + body.replace("_", ""),
        "ghp_" + "a" * 36,
        "ks_sbx_" + "a" * 15 + "_" + "b" * 38,
        "ks_sbx_" + "a" * 16 + "_" + "b" * 37,
    ]
    for text in near_misses:
        assert TOKEN_PATTERN.fullmatch(text) is None, text
        assert secrets.parse(text) is None, text


def test_every_single_character_change_fails_the_checksum_or_the_pattern():
    secret = make()
    changed = 0
    for i in range(len("ks_sbx_"), len(secret)):
        for ch in ("A", "z", "0"):
            if secret[i] in (ch, "_"):
                continue
            mutated = secret[:i] + ch + secret[i + 1 :]
            assert secrets.parse(mutated) is None, (i, ch)
            changed += 1
    assert changed > 100


def test_mutated_characters_outside_the_alphabet_do_not_match():
    secret = make()
    for ch in ("-", ".", "+", "/", "=", "é", " "):
        mutated = secret[:20] + ch + secret[21:]
        assert TOKEN_PATTERN.fullmatch(mutated) is None
        assert secrets.parse(mutated) is None


def test_random_part_has_at_least_160_bits_of_entropy():
    assert secrets.RANDOM_LENGTH * math.log2(len(secrets.ALPHABET)) >= 160


def test_secrets_are_unique():
    made = {make() for _ in range(5000)}
    assert len(made) == 5000


def test_the_documented_expression_is_the_one_in_code():
    with open("docs/security.md", encoding="utf-8") as doc:
        text = doc.read()
    documented = re.search(r"```regex\n(.+?)\n```", text, re.S).group(1).strip()
    assert documented == TOKEN_PATTERN.pattern
    assert re.compile(documented).fullmatch(make())


def test_hash_is_keyed_and_comparison_accepts_any_current_key():
    secret = make()
    stored = secrets.hash_secret(secret, "k1")
    assert stored != secrets.hash_secret(secret, "k2") and len(stored) == 64
    assert secrets.matches(secret, stored, ["k2", "k1"])
    assert not secrets.matches(secret, stored, ["k2"])
    assert not secrets.matches(secret, None, ["k1"])
