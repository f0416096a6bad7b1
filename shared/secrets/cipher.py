"""Hybrid encryption of one value, byte-compatible with striv's `encrypt-value`.

Format (striv's): base64( JSON {"key": base64(RSA-OAEP(fernet_key)), "payload": fernet_token} ),
where RSA-OAEP uses MGF1-SHA256, SHA-256 and no label, and `fernet_key` is the url-safe base64 Fernet
key itself (44 ASCII bytes, not the raw 32 bytes). RSA only wraps the key, so values of any length
work; Fernet (AES-128-CBC + HMAC-SHA256) authenticates the payload, so tampering is detected.
"""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shared.secrets.errors import DecryptionError


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def encrypt_value(public_key: rsa.RSAPublicKey, cleartext: str) -> str:
    """A fresh ciphertext for `cleartext` (random Fernet key each time, so equal values differ)."""
    fernet_key = Fernet.generate_key()
    wrapped = public_key.encrypt(fernet_key, _oaep())
    token = Fernet(fernet_key).encrypt(cleartext.encode("utf-8"))
    envelope = {"key": base64.b64encode(wrapped).decode("ascii"), "payload": token.decode("ascii")}
    return base64.b64encode(json.dumps(envelope).encode("utf-8")).decode("ascii")


def _b64(text: str, what: str) -> bytes:
    """Standard base64; line breaks are tolerated (a pasted value may wrap), anything else is not."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"secret ciphertext is malformed: {what} is not base64") from None


def _envelope(ciphertext: str) -> tuple[bytes, bytes]:
    if not isinstance(ciphertext, str):
        raise DecryptionError("secret ciphertext is malformed: it must be a string")
    try:
        envelope = json.loads(_b64(ciphertext, "the ciphertext").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DecryptionError("secret ciphertext is malformed: it does not hold a JSON object") from None
    if (
        not isinstance(envelope, dict)
        or not isinstance(envelope.get("key"), str)
        or not isinstance(envelope.get("payload"), str)
    ):
        raise DecryptionError('secret ciphertext is malformed: it needs string fields "key" and "payload"')
    try:
        token = envelope["payload"].encode("ascii")
    except UnicodeEncodeError:
        raise DecryptionError("secret ciphertext is malformed: its payload is not a Fernet token") from None
    return _b64(envelope["key"], "its key"), token


def check_ciphertext(ciphertext: str) -> None:
    """Raise DecryptionError unless `ciphertext` has striv's shape; the API checks this at the door,
    where no private key is at hand to decrypt."""
    _envelope(ciphertext)


def decrypt_value(private_key: rsa.RSAPrivateKey, ciphertext: str) -> str:
    """The cleartext, or DecryptionError saying whether it is malformed, for another key, or tampered."""
    wrapped, token = _envelope(ciphertext)
    try:
        fernet_key = private_key.decrypt(wrapped, _oaep())
    except ValueError:
        raise DecryptionError(
            "secret cannot be decrypted: it was encrypted for another key, or its key part is corrupted"
        ) from None
    try:
        cleartext = Fernet(fernet_key).decrypt(token)
    except (InvalidToken, ValueError):
        raise DecryptionError(
            "secret cannot be decrypted: its payload is corrupted or was tampered with"
        ) from None
    try:
        return cleartext.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError("secret cannot be decrypted: its cleartext is not UTF-8") from None
