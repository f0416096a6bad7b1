"""Errors of the secrets layer: each message is one line a person can act on, never key material.

Every error raised from a cryptography failure is raised `from None`, so a traceback shows our message
and not the library's internals (which could otherwise drag ciphertext or key objects into logs).
"""

from __future__ import annotations

SECRET_KEY_ENV = "BATCHYARD_SECRET_KEY_FILE"
NO_KEY_MESSAGE = f"no secret key configured: set {SECRET_KEY_ENV}"

ParamPath = tuple[str | int, ...]


def format_path(path: ParamPath) -> str:
    """`db.password`, `hosts[0].token`: how a person would point at a value in a params tree."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class SecretError(Exception):
    """Base of every secrets failure; services turn it into a rejection (4xx, RunRejected)."""


class KeyFileError(SecretError):
    """The configured key is missing, unreadable, not an RSA private key, or too small."""


class NoSecretKeyError(SecretError):
    """Secrets were given but this process has no key: they are refused, never stored or used raw."""

    def __init__(self, paths: tuple[ParamPath, ...] = ()) -> None:
        self.paths = paths
        where = f" (secret at {', '.join(format_path(p) for p in paths)})" if paths else ""
        super().__init__(NO_KEY_MESSAGE + where)


class DecryptionError(SecretError):
    """A ciphertext that is malformed, tampered with, or made for another key."""

    def __init__(self, reason: str, path: ParamPath = ()) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{format_path(path)}: {reason}" if path else reason)


class InvalidSecretParamError(SecretError):
    """A `{"type": "secret", ...}` param that has neither a valid `encrypted` nor a valid `value`."""

    def __init__(self, path: ParamPath, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{format_path(path)}: {reason}")
