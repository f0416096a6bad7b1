"""A rendered payload with secrets in it travels sealed from the renderer to the dispatcher."""

from __future__ import annotations

import json

import pytest

from shared.masking import StreamMasker, mask_json
from shared.secrets import (
    DecryptionError,
    Keyring,
    decrypt_secrets,
    encrypt_cleartext_secrets,
    generate_key,
    load_private_key,
    open_rendered,
    seal_rendered,
)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring(private_key=load_private_key(generate_key(2048)), source="test")


def test_secrets_go_from_the_door_to_a_masked_log_without_ever_being_recorded_in_clear(
    keyring: Keyring,
) -> None:
    stored = encrypt_cleartext_secrets(
        {"db": {"password": {"type": "secret", "value": "hunter2-db"}}}, keyring.public_key
    )
    params, secrets = decrypt_secrets(stored, keyring)
    payload = {"command": ["psql", f"postgres://app:{params['db']['password']}@db/app"]}  # type: ignore[index]

    sealed = seal_rendered(payload, secrets, keyring.public_key)
    readable = mask_json(payload, secrets)
    recorded = json.dumps({"stored": stored, "sealed": sealed, "readable": readable})
    assert "hunter2-db" not in recorded
    assert readable == {"command": ["psql", "postgres://app:***@db/app"]}

    opened = open_rendered(sealed, keyring)
    assert opened.payload == payload
    masker = StreamMasker(opened.secrets)
    log = masker.feed(b"connecting to postgres://app:hunter2") + masker.feed(b"-db@db/app\n") + masker.flush()
    assert log == b"connecting to postgres://app:***@db/app\n"


def test_a_large_payload_seals_and_opens(keyring: Keyring) -> None:
    payload = {"files": ["x" * 1000] * 100, "n": 3, "ok": True, "none": None}
    opened = open_rendered(seal_rendered(payload, [], keyring.public_key), keyring)
    assert opened == (payload, frozenset())


def test_an_ordinary_secret_is_not_taken_for_a_sealed_payload(keyring: Keyring) -> None:
    with pytest.raises(DecryptionError, match="sealed payload is not JSON"):
        open_rendered(keyring.encrypt("hunter2"), keyring)
    with pytest.raises(DecryptionError, match='needs "payload" and a list of string "secrets"'):
        open_rendered(keyring.encrypt('{"payload": 1}'), keyring)
