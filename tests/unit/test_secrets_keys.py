"""Secret keys: generation, loading from PEM or file, and refusals that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.secrets import (
    NO_KEY_MESSAGE,
    KeyFileError,
    Keyring,
    NoSecretKeyError,
    generate_key,
    key_fingerprint,
    load_keyring,
    load_private_key,
    load_public_key,
    public_key_pem,
    require_keyring,
)


@pytest.fixture(scope="module")
def pem() -> str:
    return generate_key(2048)


@pytest.fixture
def key_file(tmp_path: Path, pem: str) -> Path:
    path = tmp_path / "secret.pem"
    path.write_text(pem)
    return path


def test_generated_key_is_an_unencrypted_pkcs8_pem_rsa_key(pem: str) -> None:
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537


def test_generated_key_defaults_to_4096_bits() -> None:
    assert load_private_key(generate_key()).key_size == 4096


def test_generate_key_refuses_fewer_than_2048_bits() -> None:
    with pytest.raises(ValueError, match="at least 2048 bits"):
        generate_key(1024)


def test_private_key_loads_from_pem_text_pem_bytes_and_a_path(pem: str, key_file: Path) -> None:
    numbers = {
        load_private_key(source).private_numbers().d
        for source in (pem, pem.encode(), key_file, str(key_file))
    }
    assert len(numbers) == 1


def test_traditional_pkcs1_rsa_pem_is_accepted_too(pem: str) -> None:
    pkcs1 = load_private_key(pem).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert load_private_key(pkcs1).key_size == 2048


def test_no_key_file_configured_gives_no_keyring() -> None:
    assert load_keyring(None) is None
    assert load_keyring("") is None


def test_requiring_a_keyring_that_is_not_configured_says_which_setting_to_set() -> None:
    with pytest.raises(NoSecretKeyError) as raised:
        require_keyring(None)
    assert str(raised.value) == NO_KEY_MESSAGE == "no secret key configured: set BATCHYARD_SECRET_KEY_FILE"


def test_keyring_loads_from_the_configured_file_and_names_it(key_file: Path, pem: str) -> None:
    keyring = load_keyring(key_file)
    assert keyring is not None
    assert keyring.source == str(key_file)
    assert require_keyring(keyring) is keyring
    assert keyring.decrypt(keyring.encrypt("swordfish")) == "swordfish"
    assert keyring.fingerprint.startswith("sha256:")
    assert (
        keyring.fingerprint
        == key_fingerprint(load_public_key(pem))
        != key_fingerprint(load_private_key(generate_key(2048)))
    )


def test_key_file_path_may_start_with_home(
    key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    keyring = load_keyring(f"~/{key_file.name}")
    assert keyring is not None and keyring.source == str(key_file)


def test_keyring_repr_does_not_show_the_private_key(key_file: Path) -> None:
    keyring = load_keyring(key_file)
    assert repr(keyring) == f"Keyring(source='{key_file}')"


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"^key file .*nope\.pem does not exist$"):
        load_keyring(tmp_path / "nope.pem")


def test_key_file_that_is_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="is a directory"):
        load_keyring(tmp_path)


def test_key_file_that_is_not_pem_says_it_is_not_a_pem_rsa_private_key(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    path.write_text("hello, I am not a key\n")
    with pytest.raises(KeyFileError) as raised:
        load_keyring(path)
    assert str(raised.value) == f"key file {path} is not a PEM RSA private key"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_key_file_holding_an_ec_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyFileError, match=f"key file {path} is not a PEM RSA private key: it holds another"):
        load_keyring(path)


def test_passphrase_protected_key_is_refused_with_the_reason(tmp_path: Path, pem: str) -> None:
    path = tmp_path / "locked.pem"
    path.write_bytes(
        load_private_key(pem).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(KeyFileError, match="protected by a passphrase"):
        load_keyring(path)


def test_rsa_key_below_2048_bits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weak.pem"
    path.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyFileError, match="holds a 1024-bit RSA key; at least 2048 bits are required"):
        load_keyring(path)


def test_public_key_comes_from_a_public_pem_or_is_derived_from_the_private_key(
    pem: str, key_file: Path, tmp_path: Path
) -> None:
    private = load_private_key(pem)
    public_pem = public_key_pem(private)
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in public_pem
    public_file = tmp_path / "public.pem"
    public_file.write_text(public_pem)
    expected = private.public_key().public_numbers()
    for source in (public_pem, public_file, pem, key_file):
        public = load_public_key(source)
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.public_numbers() == expected
    assert public_key_pem(load_public_key(public_pem)) == public_pem


def test_public_key_file_that_is_not_a_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\nnot really\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match=f"key file {path} is not a PEM RSA public or private key"):
        load_public_key(path)


def test_keyring_can_be_built_around_a_key_in_memory(pem: str) -> None:
    keyring = Keyring(private_key=load_private_key(pem), source="test")
    assert keyring.public_key.public_numbers() == load_public_key(pem).public_numbers()
