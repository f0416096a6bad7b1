"""Secret-typed values inside a params tree (nested dicts and lists, as in jobs, dimensions, state).

Two forms share the type tag:
- `{"type": "secret", "encrypted": "<ciphertext>"}` is what is stored, published and projected;
- `{"type": "secret", "value": "<cleartext>"}` is accepted only at the API's door, where it is
  encrypted at once (`encrypt_cleartext_secrets`) and never stored as given.
The top level of a params tree is always a mapping of param names, never itself a value: a job may
have params named `type` and `value` without being taken for a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa

from shared.secrets.cipher import check_ciphertext, encrypt_value
from shared.secrets.errors import (
    DecryptionError,
    InvalidSecretParamError,
    NoSecretKeyError,
    ParamPath,
)
from shared.secrets.keys import Keyring

SECRET_TYPE = "secret"
MASK = "***"

_SHAPE = (
    'a secret is {"type": "secret", "encrypted": "<ciphertext>"} or {"type": "secret", "value": "<text>"}'
)


class SecretParam(NamedTuple):
    """A validated secret found in a tree: exactly one of `encrypted` and `cleartext` is set."""

    path: ParamPath
    encrypted: str | None
    cleartext: str | None


class DecryptedParams(NamedTuple):
    """What the renderer works with, in memory only: the tree with cleartext strings in place of
    secrets, and every cleartext so the payload preview and the logs can be masked for them."""

    params: dict[str, object]
    secrets: frozenset[str]


def is_secret(value: object) -> bool:
    """Whether a value carries the secret type tag, in either form (or malformed)."""
    return isinstance(value, Mapping) and value.get("type") == SECRET_TYPE


def _parse(path: ParamPath, value: Mapping[object, object]) -> SecretParam:
    keys = set(value.keys())
    if keys == {"type", "encrypted"}:
        encrypted = value["encrypted"]
        if not isinstance(encrypted, str) or not encrypted.strip():
            raise InvalidSecretParamError(path, "a secret's encrypted value must be a non-empty string")
        return SecretParam(path, encrypted, None)
    if keys == {"type", "value"}:
        cleartext = value["value"]
        if not isinstance(cleartext, str):
            raise InvalidSecretParamError(path, "a secret's value must be a string")
        return SecretParam(path, None, cleartext)
    raise InvalidSecretParamError(path, _SHAPE)


OnSecret = Callable[[SecretParam], object]


def _walk(value: object, path: ParamPath, on_secret: OnSecret) -> object:
    if isinstance(value, Mapping):
        if value.get("type") == SECRET_TYPE:
            return on_secret(_parse(path, value))
        return {key: _walk(item, (*path, str(key)), on_secret) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, (*path, index), on_secret) for index, item in enumerate(value)]
    return value


def _map(params: Mapping[str, object], on_secret: OnSecret) -> dict[str, object]:
    return {name: _walk(value, (name,), on_secret) for name, value in params.items()}


def find_secrets(params: Mapping[str, object]) -> list[SecretParam]:
    """Every secret in the tree, in document order; raises InvalidSecretParamError on a malformed one."""
    found: list[SecretParam] = []

    def collect(secret: SecretParam) -> object:
        found.append(secret)
        return None

    _map(params, collect)
    return found


def contains_cleartext_secret(params: Mapping[str, object]) -> bool:
    """Whether a `{"type": "secret", "value": ...}` is still in the tree (it must never be stored)."""
    return any(secret.cleartext is not None for secret in find_secrets(params))


def refuse_secrets_without_key(params: Mapping[str, object], key: object | None) -> None:
    """Raise NoSecretKeyError naming every secret's path when `key` is None and the tree has secrets.

    Without a key an encrypted secret could never be used and a cleartext one could not be protected,
    so both are refused rather than stored.
    """
    if key is None:
        paths = tuple(secret.path for secret in find_secrets(params))
        if paths:
            raise NoSecretKeyError(paths)


def encrypt_cleartext_secrets(
    params: Mapping[str, object], public_key: rsa.RSAPublicKey | None
) -> dict[str, object]:
    """A copy with every cleartext secret encrypted, for the API to store; other values untouched.

    Already-encrypted secrets are checked for striv's ciphertext shape, so a mangled paste is a 422 at
    the door rather than a rejected run later. Without a key, any secret is refused.
    """
    refuse_secrets_without_key(params, public_key)

    def seal(secret: SecretParam) -> object:
        if secret.cleartext is not None:
            assert public_key is not None
            return {"type": SECRET_TYPE, "encrypted": encrypt_value(public_key, secret.cleartext)}
        assert secret.encrypted is not None
        try:
            check_ciphertext(secret.encrypted)
        except DecryptionError as exc:
            raise DecryptionError(exc.reason, secret.path) from None
        return {"type": SECRET_TYPE, "encrypted": secret.encrypted}

    return _map(params, seal)


def mask_secrets(params: Mapping[str, object]) -> dict[str, object]:
    """A copy for API responses and previews with every secret (any form, even malformed) as `***`.

    It never raises: showing a read model must not fail on a value the write side let through.
    """

    def mask(value: object) -> object:
        if is_secret(value):
            return MASK
        if isinstance(value, Mapping):
            return {key: mask(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [mask(item) for item in value]
        return value

    return {name: mask(value) for name, value in params.items()}


def decrypt_secrets(params: Mapping[str, object], keyring: Keyring | None) -> DecryptedParams:
    """The tree with each encrypted secret replaced by its cleartext string, and the set of cleartexts.

    For the renderer and dispatcher only, in memory. A cleartext-form secret here means one slipped
    past the door unencrypted, so it is refused rather than silently used.
    """
    refuse_secrets_without_key(params, keyring)
    cleartexts: set[str] = set()

    def open_secret(secret: SecretParam) -> object:
        if secret.encrypted is None:
            raise InvalidSecretParamError(
                secret.path, "a cleartext secret must be encrypted before it is stored or rendered"
            )
        assert keyring is not None
        try:
            cleartext = keyring.decrypt(secret.encrypted)
        except DecryptionError as exc:
            raise DecryptionError(exc.reason, secret.path) from None
        cleartexts.add(cleartext)
        return cleartext

    tree = _map(params, open_secret)
    return DecryptedParams(tree, frozenset(cleartexts))
