"""A rendered payload sealed for the dispatcher: what `RunRendered` can carry when secrets are in it.

A rendered payload holds secrets as plain strings wherever the template used them, so it cannot be
recorded as is. Sealing encrypts the payload together with the cleartexts it contains (one hybrid
ciphertext, any size): the dispatcher opens it, starts the run, and masks the log for exactly those
cleartexts, and a rerun reuses the same sealed value. Beside it the event can carry
`shared.masking.mask_json(payload, secrets)` for people to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa

from shared.secrets.cipher import encrypt_value
from shared.secrets.errors import DecryptionError
from shared.secrets.keys import Keyring


class OpenedPayload(NamedTuple):
    payload: object
    secrets: frozenset[str]


def seal_rendered(payload: object, secrets: Iterable[str], public_key: rsa.RSAPublicKey) -> str:
    """A ciphertext (striv format) of the JSON payload and the secret cleartexts it was rendered with."""
    sealed = {"payload": payload, "secrets": sorted(set(secrets))}
    return encrypt_value(public_key, json.dumps(sealed, separators=(",", ":"), ensure_ascii=False))


def open_rendered(ciphertext: str, keyring: Keyring) -> OpenedPayload:
    """The payload and its secrets back, in memory only; DecryptionError if it is not a sealed payload."""
    try:
        sealed = json.loads(keyring.decrypt(ciphertext))
    except json.JSONDecodeError:
        raise DecryptionError("sealed payload is not JSON") from None
    if (
        not isinstance(sealed, dict)
        or set(sealed) != {"payload", "secrets"}
        or not isinstance(sealed["secrets"], list)
        or not all(isinstance(secret, str) for secret in sealed["secrets"])
    ):
        raise DecryptionError('sealed payload needs "payload" and a list of string "secrets"')
    return OpenedPayload(sealed["payload"], frozenset(sealed["secrets"]))
