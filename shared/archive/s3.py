"""The archive in an S3 bucket through aiobotocore: `<prefix>/<run>/log` and `<prefix>/<run>/files/…`.

S3 objects cannot be appended to, so a log is assembled in a partial file on the archiver's local disk
(`<data_dir>/archive-staging`) and uploaded once, when its end marker arrives: a single PUT up to one
part's size, else a multipart upload streamed from the file part by part, so memory stays at one part
however large the log. Until then readers get the bytes from the live stream. The digest and size
travel as object metadata (`x-amz-meta-sha256`), so a HEAD tells whether and what was archived.
See docs/decisions/0061-s3-archive-uploads-at-the-end.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.archive.base import (
    ArchivedLog,
    ArchiveEntry,
    ArchiveError,
    StoredFile,
    check_file_name,
    check_run_id,
)
from shared.archive.staged import StagedArchive
from shared.archive.staging import Staging

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
DELETE_BATCH = 1000
DOWNLOAD_CHUNK = 1024 * 1024
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}

_SESSION = get_session()
"""One botocore session per process: it caches the service models every client would load again."""


class S3Archive(StagedArchive):
    def __init__(self, client: Any, bucket: str, prefix: str, staging_root: Path) -> None:
        super().__init__(Staging(staging_root))
        self._client = client
        self._closer: contextlib.AsyncExitStack | None = None
        self.bucket = bucket
        self._base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    @classmethod
    async def connect(
        cls,
        *,
        bucket: str,
        prefix: str,
        staging_root: Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> S3Archive:
        """Open a client (the secret goes to botocore only, never into a message or log line)."""
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            _SESSION.create_client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}),
            )
        )
        archive = cls(client, bucket, prefix, staging_root)
        archive._closer = stack
        try:
            await archive._check_bucket()
        except BaseException:
            await archive.close()
            raise
        return archive

    async def _check_bucket(self) -> None:
        """A bucket that does not exist is a setting to fix, said at start; an unreachable S3 is not
        fatal here, since sealing retries until it answers."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _not_found(exc) or str(exc.response.get("Error", {}).get("Code")) == "NoSuchBucket":
                raise ArchiveError(f"s3_bucket: bucket {self.bucket!r} does not exist") from exc
            log.warning("s3 bucket %r cannot be checked: %s", self.bucket, exc)
        except (OSError, BotoCoreError) as exc:
            log.warning("s3 endpoint not reachable yet: %s", exc)

    def key(self, run_id: str, *parts: str) -> str:
        return self._base + "/".join((check_run_id(run_id), *parts))

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def _seal(self, run_id: str, size: int, sha256: str) -> ArchivedLog:
        key = self.key(run_id, "log")
        await self._upload(key, self._staging.path(run_id), size, {"sha256": sha256})
        return ArchivedLog(run_id, size, sha256, self.location(key))

    async def _find(self, run_id: str) -> ArchivedLog | None:
        key = self.key(run_id, "log")
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise
        sha256 = head.get("Metadata", {}).get("sha256")
        if not sha256:
            return None
        return ArchivedLog(run_id, int(head["ContentLength"]), sha256, self.location(key))

    async def read(self, run_id: str, offset: int, limit: int) -> bytes:
        sealed = await self.archived(run_id)
        if sealed is None:
            raise FileNotFoundError(f"run {run_id} has no archived log")
        if limit <= 0 or offset >= sealed.bytes:
            return b""
        last = min(offset + limit, sealed.bytes) - 1
        try:
            response = await self._client.get_object(
                Bucket=self.bucket, Key=self.key(run_id, "log"), Range=f"bytes={offset}-{last}"
            )
        except ClientError as exc:
            if _not_found(exc):
                self._forget(run_id)
                raise FileNotFoundError(f"run {run_id} has no archived log") from exc
            raise
        async with response["Body"] as body:
            return bytes(await body.read())

    async def list_logs(self) -> AsyncIterator[ArchiveEntry]:
        async for item in self._list(self._base):
            run_id, _, rest = item["Key"][len(self._base) :].partition("/")
            if rest == "log":
                yield ArchiveEntry(run_id, int(item["Size"]), item["LastModified"])

    async def _delete_sealed(self, run_id: str) -> None:
        keys = [item["Key"] async for item in self._list(self.key(run_id) + "/")]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            await self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def put_file(self, run_id: str, name: str, source: Path) -> str:
        key = self.key(run_id, "files", check_file_name(name))
        size = (await asyncio.to_thread(source.stat)).st_size
        await self._upload(key, source, size, {})
        return self.location(key)

    async def get_file(self, run_id: str, name: str, destination: Path) -> None:
        key = self.key(run_id, "files", check_file_name(name))
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _not_found(exc):
                raise FileNotFoundError(f"run {run_id} has no file {name!r}") from exc
            raise
        temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}")
        try:
            with temporary.open("wb") as file:
                async with response["Body"] as body:
                    async for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                        file.write(chunk)
            os.replace(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)

    async def list_files(self, run_id: str) -> list[StoredFile]:
        base = self.key(run_id, "files") + "/"
        files = [StoredFile(item["Key"][len(base) :], int(item["Size"])) async for item in self._list(base)]
        return sorted(files, key=lambda stored: stored.name)

    async def close(self) -> None:
        await super().close()
        if self._closer is not None:
            await self._closer.aclose()
            self._closer = None

    async def _list(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item

    async def _upload(self, key: str, source: Path, size: int, metadata: dict[str, str]) -> None:
        """Upload the first `size` bytes of `source`, one part in memory at a time."""
        part_size = max(PART_SIZE, math.ceil(size / MAX_PARTS))
        with source.open("rb") as file:
            if size <= part_size:
                body = await asyncio.to_thread(os.pread, file.fileno(), size, 0)
                await self._client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata)
                return
            upload = await self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata=metadata
            )
            upload_id = upload["UploadId"]
            try:
                parts = []
                for number, start in enumerate(range(0, size, part_size), start=1):
                    length = min(part_size, size - start)
                    body = await asyncio.to_thread(os.pread, file.fileno(), length, start)
                    part = await self._client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                await self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise


def _not_found(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES
