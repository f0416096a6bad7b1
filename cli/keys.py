"""`batchyard generate-key`, `encrypt-value` and `decrypt-value`: secrets on the operator's machine.

The formats are striv's (docs/decisions/0080): a PEM PKCS#8 RSA key, and a secret param printed as
`{"type": "secret", "encrypted": "..."}` ready to paste into a state file or a job. The value to
encrypt is read from stdin (never from an argument, which would land in the shell history) and one
trailing newline is stripped, so `echo s3cret | batchyard encrypt-value ...` encrypts `s3cret`; from a
terminal it is asked for without echo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.errors import CliError

KEY_FILE_MODE = 0o600


def register(commands: Any) -> None:
    generate = commands.add_parser("generate-key", help="write a new RSA private key (PEM PKCS#8)")
    generate.add_argument(
        "--out", type=Path, metavar="FILE", help="write it here, mode 0600 (default: stdout)"
    )
    generate.add_argument("--bits", type=int, default=None, help="key size, at least 2048 (default 4096)")
    generate.set_defaults(run=run_generate)

    encrypt = commands.add_parser("encrypt-value", help="encrypt the value on stdin as a secret param")
    which = encrypt.add_mutually_exclusive_group()
    which.add_argument("--public-key", type=Path, metavar="FILE", help="the public key (PEM)")
    which.add_argument("--key", type=Path, metavar="FILE", help="the private key (its public half is used)")
    encrypt.set_defaults(run=run_encrypt)

    decrypt = commands.add_parser("decrypt-value", help="decrypt a secret read on stdin (operators only)")
    decrypt.add_argument(
        "--key", type=Path, metavar="FILE", help="the private key (default: $BATCHYARD_SECRET_KEY_FILE)"
    )
    decrypt.set_defaults(run=run_decrypt)


def run_generate(args: argparse.Namespace) -> int:
    from shared.secrets import generate_key, key_fingerprint, load_private_key
    from shared.secrets.keys import DEFAULT_KEY_BITS

    try:
        pem = generate_key(args.bits or DEFAULT_KEY_BITS)
    except ValueError as exc:
        raise CliError(f"--bits: {exc}") from None
    if args.out is None:
        sys.stdout.write(pem)
        return 0
    _write_new_file(args.out, pem)
    fingerprint = key_fingerprint(load_private_key(pem))
    print(f"wrote {args.out} (mode 0600, public key {fingerprint})", file=sys.stderr)
    return 0


def _write_new_file(path: Path, text: str) -> None:
    """Created with mode 0600 from the first byte (no window where others may read it); never replaced."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise CliError(f"{path} already exists; refusing to overwrite a key (remove it first)") from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w") as key_file:
        os.fchmod(key_file.fileno(), KEY_FILE_MODE)
        key_file.write(text)


def _key_path(given: Path | None, option: str) -> Path:
    from shared.secrets import SECRET_KEY_ENV

    if given is not None:
        return given
    configured = os.environ.get(SECRET_KEY_ENV)
    if not configured:
        raise CliError(f"which key? pass {option} FILE or set {SECRET_KEY_ENV}")
    return Path(configured)


def read_value() -> str:
    """The value on stdin without one trailing newline; asked for without echo on a terminal."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("value to encrypt (not shown): ")
    text = sys.stdin.read()
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def run_encrypt(args: argparse.Namespace) -> int:
    from shared.secrets import SECRET_TYPE, SecretError, encrypt_value, load_public_key

    path = args.public_key or _key_path(args.key, "--public-key or --key")
    try:
        public_key = load_public_key(path)
    except SecretError as exc:
        raise CliError(str(exc)) from None
    value = read_value()
    if not value:
        raise CliError("nothing to encrypt: stdin was empty")
    print(json.dumps({"type": SECRET_TYPE, "encrypted": encrypt_value(public_key, value)}))
    return 0


def ciphertext_of(text: str) -> str:
    """The ciphertext in a pasted secret param (`{"type": "secret", ...}`) or the bare ciphertext."""
    text = text.strip()
    if not text.startswith("{"):
        return text
    try:
        param = json.loads(text)
    except ValueError:
        raise CliError(
            "stdin starts with '{' but is not JSON: paste the secret param or its ciphertext"
        ) from None
    if not isinstance(param, dict) or not isinstance(param.get("encrypted"), str):
        raise CliError(
            'stdin holds JSON without an "encrypted" string: paste {"type": "secret", "encrypted": ...}'
        )
    ciphertext: str = param["encrypted"]
    return ciphertext


def run_decrypt(args: argparse.Namespace) -> int:
    from shared.secrets import SecretError, decrypt_value, load_private_key

    path = _key_path(args.key, "--key")
    try:
        private_key = load_private_key(path)
        ciphertext = ciphertext_of(sys.stdin.read())
        if not ciphertext:
            raise CliError("nothing to decrypt: stdin was empty")
        print(decrypt_value(private_key, ciphertext))
    except SecretError as exc:
        raise CliError(str(exc)) from None
    return 0
