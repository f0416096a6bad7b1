"""Ciphertexts are striv's: made step by step from striv's documented format, they decrypt here, and
ours open step by step the striv way. Bad ciphertexts fail with a SecretError that leaks nothing."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shared.secrets import (
    DecryptionError,
    SecretError,
    check_ciphertext,
    decrypt_value,
    encrypt_value,
    generate_key,
    load_private_key,
)

STRIV_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return load_private_key(generate_key(2048))


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return load_private_key(generate_key(2048))


def striv_encrypt(public_key: rsa.RSAPublicKey, cleartext: str) -> str:
    """striv's encrypt-value, per its documented format, built from the cryptography primitives."""
    fernet_key = Fernet.generate_key()
    encrypted_key = public_key.encrypt(fernet_key, STRIV_OAEP)
    payload = Fernet(fernet_key).encrypt(cleartext.encode("utf-8"))
    envelope = {"key": base64.b64encode(encrypted_key).decode("ascii"), "payload": payload.decode("ascii")}
    return base64.b64encode(json.dumps(envelope).encode("utf-8")).decode("ascii")


def striv_decrypt(private_key: rsa.RSAPrivateKey, ciphertext: str) -> str:
    envelope = json.loads(base64.b64decode(ciphertext).decode("utf-8"))
    fernet_key = private_key.decrypt(base64.b64decode(envelope["key"].encode("utf-8")), STRIV_OAEP)
    return Fernet(fernet_key).decrypt(envelope["payload"].encode("ascii")).decode("utf-8")


def envelope_of(ciphertext: str) -> dict[str, str]:
    envelope: dict[str, str] = json.loads(base64.b64decode(ciphertext))
    return envelope


def rebuild(envelope: dict[str, str]) -> str:
    return base64.b64encode(json.dumps(envelope).encode()).decode()


VALUES = ["swordfish", "", "pässwörd ✓ 秘密", "line one\nline two\n", "x" * 10_240]


@pytest.mark.parametrize("cleartext", VALUES, ids=["short", "empty", "unicode", "multiline", "10KB"])
def test_value_encrypted_the_striv_way_decrypts(key: rsa.RSAPrivateKey, cleartext: str) -> None:
    assert decrypt_value(key, striv_encrypt(key.public_key(), cleartext)) == cleartext


@pytest.mark.parametrize("cleartext", VALUES, ids=["short", "empty", "unicode", "multiline", "10KB"])
def test_value_encrypted_by_batchyard_decrypts_the_striv_way(key: rsa.RSAPrivateKey, cleartext: str) -> None:
    assert striv_decrypt(key, encrypt_value(key.public_key(), cleartext)) == cleartext


def test_ciphertext_is_base64_of_json_with_a_wrapped_fernet_key_and_a_fernet_token(
    key: rsa.RSAPrivateKey,
) -> None:
    envelope = envelope_of(encrypt_value(key.public_key(), "swordfish"))
    assert set(envelope) == {"key", "payload"}
    wrapped = base64.b64decode(envelope["key"], validate=True)
    assert len(wrapped) == key.key_size // 8
    fernet_key = key.decrypt(wrapped, STRIV_OAEP)
    assert len(base64.urlsafe_b64decode(fernet_key)) == 32
    assert Fernet(fernet_key).decrypt(envelope["payload"].encode()) == b"swordfish"


def test_same_value_encrypts_differently_each_time(key: rsa.RSAPrivateKey) -> None:
    assert encrypt_value(key.public_key(), "same") != encrypt_value(key.public_key(), "same")


def test_ciphertext_wrapped_over_several_lines_still_decrypts(key: rsa.RSAPrivateKey) -> None:
    ciphertext = encrypt_value(key.public_key(), "swordfish")
    wrapped = "\n".join(ciphertext[i : i + 64] for i in range(0, len(ciphertext), 64)) + "\n"
    assert decrypt_value(key, wrapped) == "swordfish"


def assert_leaks_nothing(error: SecretError, *material: str) -> None:
    assert error.__cause__ is None and error.__suppress_context__
    for text in material:
        assert text not in str(error)


def test_value_encrypted_for_another_key_is_refused_clearly(
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    ciphertext = striv_encrypt(other_key.public_key(), "swordfish")
    with pytest.raises(DecryptionError, match="encrypted for another key") as raised:
        decrypt_value(key, ciphertext)
    assert_leaks_nothing(raised.value, "swordfish", ciphertext)


def test_tampered_payload_is_refused(key: rsa.RSAPrivateKey) -> None:
    envelope = envelope_of(encrypt_value(key.public_key(), "swordfish"))
    token = bytearray(base64.urlsafe_b64decode(envelope["payload"]))
    token[-40] ^= 0x01
    envelope["payload"] = base64.urlsafe_b64encode(bytes(token)).decode()
    with pytest.raises(DecryptionError, match="payload is corrupted or was tampered with") as raised:
        decrypt_value(key, rebuild(envelope))
    assert_leaks_nothing(raised.value, "swordfish")


def test_payload_swapped_from_another_ciphertext_is_refused(key: rsa.RSAPrivateKey) -> None:
    first = envelope_of(encrypt_value(key.public_key(), "first"))
    second = envelope_of(encrypt_value(key.public_key(), "second"))
    with pytest.raises(DecryptionError, match="tampered"):
        decrypt_value(key, rebuild({"key": first["key"], "payload": second["payload"]}))


def test_tampered_wrapped_key_is_refused(key: rsa.RSAPrivateKey) -> None:
    envelope = envelope_of(encrypt_value(key.public_key(), "swordfish"))
    wrapped = bytearray(base64.b64decode(envelope["key"]))
    wrapped[10] ^= 0xFF
    envelope["key"] = base64.b64encode(bytes(wrapped)).decode()
    with pytest.raises(DecryptionError, match="another key, or its key part is corrupted"):
        decrypt_value(key, rebuild(envelope))


@pytest.mark.parametrize(
    ("ciphertext", "reason"),
    [
        ("not base64 at all!", "the ciphertext is not base64"),
        (base64.b64encode(b"\xff\xfe").decode(), "does not hold a JSON object"),
        (base64.b64encode(b"[1, 2]").decode(), 'needs string fields "key" and "payload"'),
        (base64.b64encode(b'{"key": "AAAA"}').decode(), 'needs string fields "key" and "payload"'),
        (rebuild({"key": "%%%", "payload": "x"}), "its key is not base64"),
        (rebuild({"key": "AAAA", "payload": "tøken"}), "payload is not a Fernet token"),
    ],
    ids=["not-base64", "not-json", "not-object", "no-payload", "key-not-base64", "payload-not-ascii"],
)
def test_malformed_ciphertext_is_refused_saying_what_is_wrong(
    key: rsa.RSAPrivateKey, ciphertext: str, reason: str
) -> None:
    with pytest.raises(DecryptionError, match=reason) as raised:
        decrypt_value(key, ciphertext)
    assert str(raised.value).startswith("secret ciphertext is malformed")
    with pytest.raises(DecryptionError, match=reason):
        check_ciphertext(ciphertext)


def test_truncated_ciphertext_is_refused(key: rsa.RSAPrivateKey) -> None:
    ciphertext = encrypt_value(key.public_key(), "swordfish")
    with pytest.raises(DecryptionError):
        decrypt_value(key, ciphertext[: len(ciphertext) // 2])


def test_a_well_formed_ciphertext_passes_the_shape_check_without_a_key(key: rsa.RSAPrivateKey) -> None:
    check_ciphertext(striv_encrypt(key.public_key(), "swordfish"))
