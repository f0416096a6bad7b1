"""Secret values inside params trees: encrypted at the door, masked in responses, decrypted only in
memory by the renderer, and refused when no key is configured."""

from __future__ import annotations

import copy
import json

import pytest

from shared.secrets import (
    MASK,
    DecryptionError,
    InvalidSecretParamError,
    Keyring,
    NoSecretKeyError,
    contains_cleartext_secret,
    decrypt_secrets,
    encrypt_cleartext_secrets,
    find_secrets,
    format_path,
    generate_key,
    is_secret,
    load_private_key,
    mask_secrets,
    refuse_secrets_without_key,
)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring(private_key=load_private_key(generate_key(2048)), source="test")


@pytest.fixture(scope="module")
def other_keyring() -> Keyring:
    return Keyring(private_key=load_private_key(generate_key(2048)), source="other")


def cleartext(value: str) -> dict[str, str]:
    return {"type": "secret", "value": value}


def encrypted(keyring: Keyring, value: str) -> dict[str, str]:
    return {"type": "secret", "encrypted": keyring.encrypt(value)}


def test_a_secret_is_an_object_typed_secret() -> None:
    assert is_secret({"type": "secret", "encrypted": "abc"})
    assert is_secret({"type": "secret", "value": "abc"})
    assert not is_secret({"type": "string", "value": "abc"})
    assert not is_secret("secret")
    assert not is_secret(["secret"])


def test_cleartext_secrets_are_encrypted_at_the_door_at_any_depth(keyring: Keyring) -> None:
    params = {
        "region": "eu",
        "db": {"host": "db1", "password": cleartext("hunter2-db")},
        "hosts": [{"name": "a", "token": cleartext("token-a")}, "plain"],
        "api_key": cleartext("top-level-key"),
    }
    original = copy.deepcopy(params)
    stored = encrypt_cleartext_secrets(params, keyring.public_key)
    assert params == original, "the input tree is not modified"
    assert not contains_cleartext_secret(stored)
    dumped = json.dumps(stored)
    for value in ("hunter2-db", "token-a", "top-level-key"):
        assert value not in dumped
    assert stored["region"] == "eu"
    assert stored["db"]["host"] == "db1"  # type: ignore[index]
    assert stored["hosts"][1] == "plain"  # type: ignore[index]
    assert [format_path(s.path) for s in find_secrets(stored)] == ["db.password", "hosts[0].token", "api_key"]
    assert decrypt_secrets(stored, keyring).params == {
        "region": "eu",
        "db": {"host": "db1", "password": "hunter2-db"},
        "hosts": [{"name": "a", "token": "token-a"}, "plain"],
        "api_key": "top-level-key",
    }


def test_already_encrypted_secrets_pass_the_door_unchanged(keyring: Keyring) -> None:
    params = {"password": encrypted(keyring, "swordfish")}
    assert encrypt_cleartext_secrets(params, keyring.public_key) == params


def test_a_mangled_ciphertext_is_refused_at_the_door_naming_the_param(keyring: Keyring) -> None:
    with pytest.raises(DecryptionError) as raised:
        encrypt_cleartext_secrets(
            {"db": {"password": {"type": "secret", "encrypted": "oops"}}}, keyring.public_key
        )
    assert raised.value.path == ("db", "password")
    assert str(raised.value).startswith("db.password: secret ciphertext is malformed")


def test_top_level_params_named_type_and_value_are_not_a_secret(keyring: Keyring) -> None:
    params = {"type": "secret", "value": "just a param"}
    assert encrypt_cleartext_secrets(params, keyring.public_key) == params
    assert mask_secrets(params) == params
    assert decrypt_secrets(params, None).params == params


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ({"type": "secret"}, 'a secret is {"type": "secret", "encrypted"'),
        ({"type": "secret", "value": "a", "encrypted": "b"}, 'a secret is {"type": "secret", "encrypted"'),
        ({"type": "secret", "value": "a", "note": "b"}, 'a secret is {"type": "secret", "encrypted"'),
        ({"type": "secret", "value": 42}, "a secret's value must be a string"),
        ({"type": "secret", "encrypted": ""}, "a secret's encrypted value must be a non-empty string"),
        ({"type": "secret", "encrypted": ["x"]}, "a secret's encrypted value must be a non-empty string"),
    ],
    ids=["no-value", "both", "extra-key", "not-string", "empty-ciphertext", "ciphertext-not-string"],
)
def test_malformed_secret_is_refused_naming_its_path(keyring: Keyring, secret: object, reason: str) -> None:
    params = {"jobs": [{"auth": secret}]}
    with pytest.raises(InvalidSecretParamError) as raised:
        encrypt_cleartext_secrets(params, keyring.public_key)
    assert raised.value.path == ("jobs", 0, "auth")
    assert str(raised.value).startswith("jobs[0].auth: " + reason)


def test_without_a_key_secrets_are_refused_naming_each_one() -> None:
    params = {"db": {"password": cleartext("hunter2")}, "token": {"type": "secret", "encrypted": "abc"}}
    for refuse in (
        lambda: encrypt_cleartext_secrets(params, None),
        lambda: decrypt_secrets(params, None),
        lambda: refuse_secrets_without_key(params, None),
    ):
        with pytest.raises(NoSecretKeyError) as raised:
            refuse()
        assert str(raised.value) == (
            "no secret key configured: set BATCHYARD_SECRET_KEY_FILE (secret at db.password, token)"
        )
        assert "hunter2" not in str(raised.value)
        assert raised.value.paths == (("db", "password"), ("token",))


def test_without_a_key_params_without_secrets_are_fine() -> None:
    params = {"db": {"host": "db1"}, "sizes": [1, 2]}
    refuse_secrets_without_key(params, None)
    assert encrypt_cleartext_secrets(params, None) == params
    assert decrypt_secrets(params, None) == (params, frozenset())


def test_with_a_key_nothing_is_refused(keyring: Keyring) -> None:
    refuse_secrets_without_key({"token": cleartext("abc")}, keyring)


def test_responses_show_every_secret_as_three_stars(keyring: Keyring) -> None:
    params = {
        "db": {"password": encrypted(keyring, "hunter2"), "host": "db1"},
        "list": [cleartext("visible?"), {"type": "secret", "broken": True}],
        "plain": "value",
    }
    original = copy.deepcopy(params)
    masked = mask_secrets(params)
    assert masked == {"db": {"password": MASK, "host": "db1"}, "list": [MASK, MASK], "plain": "value"}
    assert MASK == "***"
    assert params == original
    dumped = json.dumps(masked)
    assert "visible?" not in dumped and params["db"]["password"]["encrypted"] not in dumped  # type: ignore[index]


def test_renderer_gets_cleartext_params_and_the_set_of_secrets(keyring: Keyring) -> None:
    params = {
        "db": {"password": encrypted(keyring, "hunter2-db")},
        "tokens": [encrypted(keyring, "token-a"), encrypted(keyring, "token-a")],
        "retries": 3,
    }
    decrypted = decrypt_secrets(params, keyring)
    tree, secrets = decrypted
    assert tree == {"db": {"password": "hunter2-db"}, "tokens": ["token-a", "token-a"], "retries": 3}
    assert secrets == frozenset({"hunter2-db", "token-a"})
    assert "hunter2-db" not in json.dumps(params)


def test_secret_for_another_key_fails_naming_the_param(keyring: Keyring, other_keyring: Keyring) -> None:
    params = {"db": {"password": encrypted(other_keyring, "hunter2")}}
    with pytest.raises(DecryptionError) as raised:
        decrypt_secrets(params, keyring)
    assert raised.value.path == ("db", "password")
    assert str(raised.value).startswith(
        "db.password: secret cannot be decrypted: it was encrypted for another"
    )
    assert raised.value.__cause__ is None


def test_a_cleartext_secret_reaching_the_renderer_is_refused_not_used(keyring: Keyring) -> None:
    with pytest.raises(InvalidSecretParamError, match="token: a cleartext secret must be encrypted"):
        decrypt_secrets({"token": cleartext("raw")}, keyring)


def test_contains_cleartext_secret_finds_a_cleartext_secret_anywhere(keyring: Keyring) -> None:
    assert contains_cleartext_secret({"a": [{"b": cleartext("x")}]})
    assert not contains_cleartext_secret({"a": [{"b": encrypted(keyring, "x")}], "c": "x"})
