"""RSA keys for secrets: generate, load, and the keyring a renderer or dispatcher holds in memory.

Only the private key decrypts, so only processes that must see cleartext (renderer, dispatcher) load
it; a process that only encrypts at the door (the API) can load the public half alone with
`load_public_key`, from a public key file or by deriving it from the private key file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.secrets.cipher import decrypt_value, encrypt_value
from shared.secrets.errors import KeyFileError, NoSecretKeyError

MIN_KEY_BITS = 2048
DEFAULT_KEY_BITS = 4096
PUBLIC_EXPONENT = 65537

KeySource = str | bytes | os.PathLike[str]


def generate_key(bits: int = DEFAULT_KEY_BITS) -> str:
    """A new unencrypted PEM PKCS#8 RSA private key: the format striv's `generate-key` writes too."""
    if bits < MIN_KEY_BITS:
        raise ValueError(f"RSA keys need at least {MIN_KEY_BITS} bits, got {bits}")
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return pem.decode("ascii")


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """The SubjectPublicKeyInfo PEM, what an encrypting client needs and may be shown freely."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    pem = public.public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def key_fingerprint(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """sha256 of the public key (DER), so logs and errors can say which key without revealing it."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public.public_bytes(
        encoding=serialization.Encoding.DER, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


def _read_source(source: KeySource) -> tuple[bytes, str]:
    """The PEM bytes and how to name them in an error: a file path, or 'the given key' for inline PEM."""
    if isinstance(source, bytes):
        return source, "the given key"
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", errors="replace"), "the given key"
    path = Path(source)
    try:
        return path.read_bytes(), f"key file {path}"
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {path} is a directory") from None
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None


def _check_size(key: rsa.RSAPrivateKey | rsa.RSAPublicKey, name: str) -> None:
    if key.key_size < MIN_KEY_BITS:
        raise KeyFileError(
            f"{name} holds a {key.key_size}-bit RSA key; at least {MIN_KEY_BITS} bits are required"
        )


def load_private_key(source: KeySource) -> rsa.RSAPrivateKey:
    """Parse an unencrypted PEM RSA private key (PKCS#8 or PKCS#1) from PEM text/bytes or a file path.

    A `str` is PEM if it starts with `-----BEGIN`, otherwise a path.
    """
    return _parse_private_key(*_read_source(source))


def _parse_private_key(data: bytes, name: str) -> rsa.RSAPrivateKey:
    not_rsa = f"{name} is not a PEM RSA private key"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"{name} is protected by a passphrase; batchyard needs an unencrypted PEM RSA private key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(not_rsa) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{not_rsa}: it holds another kind of key ({type(key).__name__})")
    _check_size(key, name)
    return key


def load_public_key(source: KeySource) -> rsa.RSAPublicKey:
    """The public key from a public key PEM, or derived from a private key PEM (then dropped)."""
    data, name = _read_source(source)
    if b"PRIVATE KEY-----" in data:
        return _parse_private_key(data, name).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{name} is not a PEM RSA public or private key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(
            f"{name} is not a PEM RSA public key: it holds another kind ({type(key).__name__})"
        )
    _check_size(key, name)
    return key


@dataclass(frozen=True)
class Keyring:
    """The private key a renderer or dispatcher decrypts with, plus where it came from for messages."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    source: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.private_key)

    def encrypt(self, cleartext: str) -> str:
        return encrypt_value(self.public_key, cleartext)

    def decrypt(self, ciphertext: str) -> str:
        return decrypt_value(self.private_key, ciphertext)


def load_keyring(key_file: str | os.PathLike[str] | None) -> Keyring | None:
    """The keyring from the configured key file, or None when no key is configured.

    None is not an error here: a process without a key runs fine until a secret shows up, and then
    `require_keyring` (or the params functions) refuse it with NO_KEY_MESSAGE.
    """
    if key_file is None or str(key_file).strip() == "":
        return None
    path = Path(key_file).expanduser()
    return Keyring(private_key=load_private_key(path), source=str(path))


def require_keyring(keyring: Keyring | None) -> Keyring:
    if keyring is None:
        raise NoSecretKeyError()
    return keyring
