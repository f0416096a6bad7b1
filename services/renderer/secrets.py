"""Secrets in the renderer: cleartext in memory for the template, never in what is recorded.

See docs/decisions/0044-renderer-consumer-and-secrets-seam.md (the seam) and
docs/decisions/0140-secrets-at-render-and-dispatch.md (this keyed implementation). `reveal` decrypts the
merged params for the template and says which cleartexts it produced; `seal` turns the rendered payload
into what `RunRendered` may carry: a copy for people with every secret as `***`, and the real payload
sealed (encrypted with the public key) for the dispatcher. Without a key, a run that has secrets is
refused: it could never be rendered by this installation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from contracts.base import JsonObject
from shared.masking import mask_json, mask_text
from shared.secrets import (
    MASK,
    Keyring,
    decrypt_secrets,
    load_keyring,
    refuse_secrets_without_key,
    seal_rendered,
)

log = logging.getLogger(__name__)

MASK_EVERY_LENGTH = 1
"""What is recorded masks every secret, however short: the log masker may skip 1-3 byte secrets to keep
logs readable (0082), but an event is forever and a short secret still must not be stored in clear."""


@dataclass(frozen=True)
class Revealed:
    params: JsonObject
    secrets: frozenset[str]


@dataclass(frozen=True)
class SealedPayload:
    """`display` is safe to record and show; `sealed` is None when the payload had no secrets."""

    display: JsonObject
    sealed: str | None


class SecretHandling(Protocol):
    def reveal(self, params: JsonObject) -> Revealed:
        """The params with secrets in cleartext; raises a `SecretError` naming the secret's path."""
        ...

    def seal(self, payload: JsonObject, display: JsonObject, secrets: frozenset[str]) -> SealedPayload:
        """What may leave the renderer for `payload`; `display` is the payload rendered with `***` in
        place of each secret, so values derived from a secret (base64, a hash) are not recorded."""
        ...


class WithoutSecretKey:
    """No key configured: params without secrets render as always, params with secrets are refused."""

    def reveal(self, params: JsonObject) -> Revealed:
        refuse_secrets_without_key(params, None)
        return Revealed(params, frozenset())

    def seal(self, payload: JsonObject, display: JsonObject, secrets: frozenset[str]) -> SealedPayload:
        return SealedPayload(payload, None)


class KeyedSecrets:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def reveal(self, params: JsonObject) -> Revealed:
        tree, secrets = decrypt_secrets(params, self.keyring)
        return Revealed(cast(JsonObject, tree), secrets)

    def seal(self, payload: JsonObject, display: JsonObject, secrets: frozenset[str]) -> SealedPayload:
        if not secrets:
            return SealedPayload(payload, None)
        masked = cast(JsonObject, _mask_numbers(mask_json(display, secrets, MASK_EVERY_LENGTH), secrets))
        return SealedPayload(masked, seal_rendered(payload, secrets, self.keyring.public_key))


def _mask_numbers(value: object, secrets: frozenset[str]) -> object:
    """A secret the template turned into a number (`std.parseInt(params.pin)`) is `***` too."""
    if isinstance(value, dict):
        return {key: _mask_numbers(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_numbers(item, secrets) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and _is_number_of(value, secrets):
        return MASK
    return value


def _is_number_of(value: float, secrets: frozenset[str]) -> bool:
    for secret in secrets:
        try:
            if float(secret) == value:
                return True
        except ValueError:
            continue
    return False


def secret_handling(key_file: Path | None) -> SecretHandling:
    """Keyed when the settings name a key file; a bad key file stops the renderer at start."""
    keyring = load_keyring(key_file)
    if keyring is None:
        log.info("no secret key configured: runs with secrets will be rejected")
        return WithoutSecretKey()
    log.info("secret key %s loaded", keyring.fingerprint)
    return KeyedSecrets(keyring)


def mask_reason(reason: str, secrets: frozenset[str]) -> str:
    """A template error can quote a secret (`error 'bad ' + params.pw`): mask it before it is recorded."""
    return mask_text(reason, secrets, MASK_EVERY_LENGTH) if secrets else reason
