"""`generate-key`, `encrypt-value` and `decrypt-value`: striv's formats, safe files, one-line errors."""

from __future__ import annotations

import base64
import io
import json
import stat
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from cli.main import main
from shared.secrets import load_private_key, public_key_pem

STRIV_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "batchyard.pem"
    assert main(["generate-key", "--bits", "2048", "--out", str(path)]) == 0
    return path


def with_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_generate_key_writes_a_pem_pkcs8_rsa_key_readable_only_by_its_owner(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert load_private_key(key_file).key_size == 2048


def test_generate_key_refuses_to_overwrite_an_existing_file(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = key_file.read_bytes()
    assert main(["generate-key", "--bits", "2048", "--out", str(key_file)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"batchyard generate-key: {key_file} already exists; refusing to overwrite a key (remove it first)"
    )
    assert key_file.read_bytes() == before


def test_generate_key_prints_to_stdout_without_out_and_refuses_small_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["generate-key", "--bits", "2048"]) == 0
    assert load_private_key(capsys.readouterr().out).key_size == 2048
    assert main(["generate-key", "--bits", "1024"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batchyard generate-key: --bits: RSA keys need at least 2048 bits, got 1024"
    )


def test_encrypt_value_prints_a_striv_secret_param_that_striv_decrypts(
    key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "public.pem"
    public.write_text(public_key_pem(load_private_key(key_file)))
    with_stdin(monkeypatch, "s3cret value\n")
    assert main(["encrypt-value", "--public-key", str(public)]) == 0
    out = capsys.readouterr().out
    param = json.loads(out)
    assert out == json.dumps({"type": "secret", "encrypted": param["encrypted"]}) + "\n"

    envelope = json.loads(base64.b64decode(param["encrypted"]))
    fernet_key = load_private_key(key_file).decrypt(base64.b64decode(envelope["key"]), STRIV_OAEP)
    assert Fernet(fernet_key).decrypt(envelope["payload"].encode()).decode() == "s3cret value"


def test_decrypt_value_reverses_encrypt_value_from_the_param_or_the_bare_ciphertext(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_stdin(monkeypatch, "line one\nline two\n\n")
    assert main(["encrypt-value", "--key", str(key_file)]) == 0
    param = capsys.readouterr().out
    with_stdin(monkeypatch, param)
    assert main(["decrypt-value", "--key", str(key_file)]) == 0
    assert capsys.readouterr().out == "line one\nline two\n\n", "exactly one trailing newline was stripped"

    with_stdin(monkeypatch, json.loads(param)["encrypted"] + "\n")
    assert main(["decrypt-value", "--key", str(key_file)]) == 0
    assert capsys.readouterr().out == "line one\nline two\n\n"


def test_decrypt_value_with_another_key_is_one_line_that_reveals_nothing(
    key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_stdin(monkeypatch, "s3cret")
    assert main(["encrypt-value", "--key", str(key_file)]) == 0
    param = capsys.readouterr().out
    other = tmp_path / "other.pem"
    assert main(["generate-key", "--bits", "2048", "--out", str(other)]) == 0
    capsys.readouterr()
    with_stdin(monkeypatch, param)
    assert main(["decrypt-value", "--key", str(other)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "batchyard decrypt-value: secret cannot be decrypted: it was encrypted for another key, "
        "or its key part is corrupted"
    )


def test_key_problems_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHYARD_SECRET_KEY_FILE", raising=False)
    with_stdin(monkeypatch, "s3cret")
    assert main(["encrypt-value"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batchyard encrypt-value: which key? pass --public-key or --key FILE or set BATCHYARD_SECRET_KEY_FILE"
    )
    assert main(["encrypt-value", "--key", str(tmp_path / "absent.pem")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"batchyard encrypt-value: key file {tmp_path / 'absent.pem'} does not exist"
    )
    with_stdin(monkeypatch, "")
    assert main(["decrypt-value", "--key", str(tmp_path / "absent.pem")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_encrypt_value_takes_the_key_from_the_environment_and_refuses_an_empty_value(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHYARD_SECRET_KEY_FILE", str(key_file))
    with_stdin(monkeypatch, "\n")
    assert main(["encrypt-value"]) == 2
    assert capsys.readouterr().err.strip() == "batchyard encrypt-value: nothing to encrypt: stdin was empty"
    with_stdin(monkeypatch, "x")
    assert main(["encrypt-value"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "secret"
