"""A test RSA key on disk and an API that loads it, shared by the secrets, state and bulk tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from shared.secrets import generate_key, load_private_key, public_key_pem
from shared.settings import Settings

TEST_KEY_BITS = 2048


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "batchyard.pem"
    path.write_text(generate_key(TEST_KEY_BITS))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def public_key_file(key_file: Path) -> Path:
    path = key_file.with_name("batchyard.pub.pem")
    path.write_text(public_key_pem(load_private_key(key_file)))
    return path


@pytest.fixture
async def keyed_api(settings: Settings, public_key_file: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """An API given only the public key, as an operator would configure it."""
    keyed = settings.model_copy(update={"secret_key_file": public_key_file})
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(keyed)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
