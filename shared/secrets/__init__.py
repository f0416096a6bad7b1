"""Secrets: RSA keys, striv-compatible hybrid encryption, and secret values inside params trees.

Pure functions; the only I/O is reading a key file. Log masking lives in `shared.masking`.
"""

from shared.secrets.cipher import check_ciphertext, decrypt_value, encrypt_value
from shared.secrets.errors import (
    NO_KEY_MESSAGE,
    SECRET_KEY_ENV,
    DecryptionError,
    InvalidSecretParamError,
    KeyFileError,
    NoSecretKeyError,
    ParamPath,
    SecretError,
    format_path,
)
from shared.secrets.keys import (
    MIN_KEY_BITS,
    Keyring,
    generate_key,
    key_fingerprint,
    load_keyring,
    load_private_key,
    load_public_key,
    public_key_pem,
    require_keyring,
)
from shared.secrets.params import (
    MASK,
    SECRET_TYPE,
    DecryptedParams,
    SecretParam,
    contains_cleartext_secret,
    decrypt_secrets,
    encrypt_cleartext_secrets,
    find_secrets,
    is_secret,
    mask_secrets,
    refuse_secrets_without_key,
)
from shared.secrets.sealed import OpenedPayload, open_rendered, seal_rendered

__all__ = [
    "MASK",
    "MIN_KEY_BITS",
    "NO_KEY_MESSAGE",
    "SECRET_KEY_ENV",
    "SECRET_TYPE",
    "DecryptedParams",
    "DecryptionError",
    "InvalidSecretParamError",
    "KeyFileError",
    "Keyring",
    "NoSecretKeyError",
    "OpenedPayload",
    "ParamPath",
    "SecretError",
    "SecretParam",
    "check_ciphertext",
    "contains_cleartext_secret",
    "decrypt_secrets",
    "decrypt_value",
    "encrypt_cleartext_secrets",
    "encrypt_value",
    "find_secrets",
    "format_path",
    "generate_key",
    "is_secret",
    "key_fingerprint",
    "load_keyring",
    "load_private_key",
    "load_public_key",
    "mask_secrets",
    "open_rendered",
    "public_key_pem",
    "refuse_secrets_without_key",
    "require_keyring",
    "seal_rendered",
]
