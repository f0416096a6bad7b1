"""The archive a process's settings name: a directory by default, or an S3 bucket."""

from __future__ import annotations

from shared.archive.base import Archive
from shared.archive.file import FileArchive
from shared.archive.s3 import S3Archive
from shared.settings import Settings


async def open_archive(settings: Settings) -> Archive:
    """Open the configured archive; close it with `await archive.close()` or `async with`."""
    if settings.archive_kind == "s3":
        secret = settings.s3_secret_access_key
        return await S3Archive.connect(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            staging_root=settings.archive_staging_path,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    return FileArchive(settings.archive_path)
