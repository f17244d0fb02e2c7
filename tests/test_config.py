"""Settings from the environment (SPEC §7)."""

from config import Config


def test_old_hmac_keys_ignore_spaces_around_commas(tmp_path):
    config = Config(str(tmp_path), environ={"SECRET_KEY": "s", "TOKEN_HMAC_OLD_KEYS": " a , b,"})
    assert config.TOKEN_HMAC_OLD_KEYS == ["a", "b"]


def test_the_token_key_is_derived_from_the_secret_key_unless_set(tmp_path):
    derived = Config(str(tmp_path), environ={"SECRET_KEY": "s"}).TOKEN_HMAC_KEY
    assert derived == Config(str(tmp_path), environ={"SECRET_KEY": "s"}).TOKEN_HMAC_KEY
    assert derived != Config(str(tmp_path), environ={"SECRET_KEY": "t"}).TOKEN_HMAC_KEY
    assert (
        Config(str(tmp_path), environ={"SECRET_KEY": "s", "TOKEN_HMAC_KEY": "k"}).TOKEN_HMAC_KEY
        == "k"
    )


def test_webhook_signing_key_is_unset_unless_pinned(tmp_path):
    env = {"SECRET_KEY": "s", "TOKEN_HMAC_KEY": "new"}
    assert Config(str(tmp_path), environ=env).WEBHOOK_SIGNING_KEY is None  # TOKEN_HMAC_KEY's
    pinned = Config(str(tmp_path), environ={**env, "WEBHOOK_SIGNING_KEY": "old"})
    assert pinned.WEBHOOK_SIGNING_KEY == "old" and pinned.TOKEN_HMAC_KEY == "new"
