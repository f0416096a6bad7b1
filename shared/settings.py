"""Settings read from `BATCHYARD_*` environment variables, one object passed to every factory."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.subjects import DEFAULT_PREFIX


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", frozen=True, extra="ignore")

    data_dir: Path = Path(".batchyard")
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/batchyard"
    nats_url: str = "nats://127.0.0.1:4222"
    bus_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9_-]+$")
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    instance: str = Field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    pg_pool_size: int = 10
    docker_url: str = Field(
        default="unix:///var/run/docker.sock",
        description="Docker Engine API the docker driver talks to (unix://, tcp:// or https://).",
    )
    command_wait_s: float = Field(
        default=2.0,
        description="How long a command's response waits for the read model to catch up with it.",
    )
    archive_kind: Literal["file", "s3"] = "file"
    archive_dir: Path | None = Field(default=None, description="Defaults to <data_dir>/archive.")
    archive_retention_days: float = Field(
        default=0, ge=0, description="Archived runs older than this are pruned; 0 keeps them forever."
    )
    s3_bucket: str = ""
    s3_prefix: str = "batchyard"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    secret_key_file: Path | None = Field(
        default=None,
        description="PEM RSA key for secrets; the API needs only its public half (a public key file works).",
    )

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Self:
        if self.archive_kind == "s3" and not self.s3_bucket:
            raise ValueError("s3_bucket: required when archive_kind is s3")
        return self

    @property
    def archive_path(self) -> Path:
        return self.archive_dir if self.archive_dir is not None else self.data_dir / "archive"

    @property
    def archive_staging_path(self) -> Path:
        """Where logs bound for S3 are assembled on local disk until their run ends."""
        return self.data_dir / "archive-staging"
