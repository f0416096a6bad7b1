"""Both archives (a directory, and S3 on a real moto server) keep logs and run files the same way."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared.archive import Archive, ArchiveError, LogGap, StoredFile, open_archive, prune_archive
from shared.settings import Settings


def new_run() -> str:
    return str(uuid.uuid4())


async def test_chunks_seal_into_one_log_with_its_size_and_sha256(archive: Archive) -> None:
    run = new_run()
    assert await archive.append(run, 0, b"hello ") == 6
    assert await archive.append(run, 6, b"world\n") == 12
    sealed = await archive.finalize(run, 12)

    assert sealed.bytes == 12
    assert sealed.sha256 == hashlib.sha256(b"hello world\n").hexdigest()
    assert sealed.location.startswith(("file://", "s3://")) and run in sealed.location
    assert await archive.read(run, 0, 100) == b"hello world\n"
    assert await archive.size(run) == 12 and await archive.exists(run)


async def test_a_chunk_written_again_changes_nothing(archive: Archive) -> None:
    run = new_run()
    await archive.append(run, 0, b"abc")
    await archive.append(run, 3, b"def")
    assert await archive.append(run, 0, b"abc") == 6
    assert await archive.append(run, 3, b"def") == 6
    assert await archive.append(run, 2, b"cdefgh") == 8, "only the bytes past the end are new"
    sealed = await archive.finalize(run, 8)
    assert await archive.read(run, 0, 100) == b"abcdefgh"
    assert sealed.sha256 == hashlib.sha256(b"abcdefgh").hexdigest()


async def test_a_chunk_beyond_the_written_end_is_refused_so_the_log_has_no_hole(archive: Archive) -> None:
    run = new_run()
    await archive.append(run, 0, b"0123")
    with pytest.raises(LogGap) as refused:
        await archive.append(run, 8, b"89")
    assert (refused.value.written, refused.value.offset) == (4, 8)
    assert await archive.written(run) == 4
    with pytest.raises(LogGap):
        await archive.finalize(run, 10)
    assert not await archive.exists(run)


async def test_finalize_refuses_a_log_longer_than_its_end_marker(archive: Archive) -> None:
    run = new_run()
    await archive.append(run, 0, b"0123456789")
    with pytest.raises(ArchiveError):
        await archive.finalize(run, 4)


async def test_a_second_finalize_and_late_chunks_change_nothing(archive: Archive) -> None:
    run = new_run()
    await archive.append(run, 0, b"once")
    first = await archive.finalize(run, 4)
    assert await archive.append(run, 0, b"once") == 4
    assert await archive.append(run, 2, b"ce") == 4
    assert await archive.finalize(run, 4) == first
    assert await archive.read(run, 0, 10) == b"once"


async def test_an_empty_log_is_archived_with_the_digest_of_nothing(archive: Archive) -> None:
    run = new_run()
    sealed = await archive.finalize(run, 0)
    assert (sealed.bytes, sealed.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await archive.read(run, 0, 10) == b""


async def test_reads_return_the_byte_range_asked_for(archive: Archive) -> None:
    run = new_run()
    data = bytes(range(256)) * 40
    for offset in range(0, len(data), 1000):
        await archive.append(run, offset, data[offset : offset + 1000])
    await archive.finalize(run, len(data))
    assert await archive.read(run, 0, 10) == data[:10]
    assert await archive.read(run, 5000, 3000) == data[5000:8000]
    assert await archive.read(run, len(data) - 5, 100) == data[-5:]
    assert await archive.read(run, len(data), 100) == b""


async def test_a_log_larger_than_one_upload_part_is_streamed_and_intact(archive: Archive) -> None:
    run = new_run()
    data = os.urandom(20 * 1024 * 1024 + 123)
    for offset in range(0, len(data), 1024 * 1024):
        await archive.append(run, offset, data[offset : offset + 1024 * 1024])
    sealed = await archive.finalize(run, len(data))
    assert (sealed.bytes, sealed.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    part_boundary = 8 * 1024 * 1024
    assert await archive.read(run, part_boundary - 3, 6) == data[part_boundary - 3 : part_boundary + 3]
    assert await archive.read(run, len(data) - 200, 1000) == data[-200:]


async def test_an_archive_reopened_after_a_restart_continues_the_partial_log(
    archive_settings: Settings,
) -> None:
    run = new_run()
    async with await open_archive(archive_settings) as before:
        await before.append(run, 0, b"written before ")
    async with await open_archive(archive_settings) as after:
        assert await after.written(run) == 15
        await after.append(run, 0, b"written before ")
        await after.append(run, 15, b"and after a restart")
        sealed = await after.finalize(run, 34)
        assert sealed.sha256 == hashlib.sha256(b"written before and after a restart").hexdigest()


async def test_a_log_sealed_by_another_process_is_seen_and_not_restarted(archive_settings: Settings) -> None:
    run = new_run()
    async with await open_archive(archive_settings) as first, await open_archive(archive_settings) as second:
        await first.append(run, 0, b"done")
        await first.finalize(run, 4)
        assert await second.append(run, 0, b"done") == 4
        assert (await second.archived(run)) == (await first.archived(run))


async def test_listing_and_deleting_archived_logs(archive: Archive) -> None:
    kept, deleted = new_run(), new_run()
    for run in (kept, deleted):
        await archive.append(run, 0, b"log of " + run.encode())
        await archive.finalize(run, 7 + len(run))
    await archive.delete(deleted)
    await archive.delete(deleted)
    listed = [entry async for entry in archive.list_logs()]
    assert [entry.run_id for entry in listed] == [kept]
    assert listed[0].bytes == 7 + len(kept)
    assert not await archive.exists(deleted)
    with pytest.raises(FileNotFoundError):
        await archive.read(deleted, 0, 10)


async def test_run_files_are_stored_listed_and_fetched_beside_the_log(
    archive: Archive, tmp_path: Path
) -> None:
    run = new_run()
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n1,2\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    await archive.put_file(run, "out/report.csv", report)
    await archive.put_file(run, "big.bin", big)

    assert await archive.list_files(run) == [
        StoredFile("big.bin", 9 * 1024 * 1024),
        StoredFile("out/report.csv", 8),
    ]
    await archive.get_file(run, "out/report.csv", tmp_path / "fetched.csv")
    await archive.get_file(run, "big.bin", tmp_path / "fetched.bin")
    assert (tmp_path / "fetched.csv").read_bytes() == b"a,b\n1,2\n"
    assert (tmp_path / "fetched.bin").read_bytes() == big.read_bytes()
    with pytest.raises(FileNotFoundError):
        await archive.get_file(run, "missing.txt", tmp_path / "missing.txt")
    await archive.delete(run)
    assert await archive.list_files(run) == []


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a//b", "a/./b", "", "dir/"])
async def test_a_file_name_that_could_leave_the_run_is_refused(
    archive: Archive, name: str, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="name"):
        await archive.put_file(new_run(), name, source)


async def test_a_run_id_that_is_not_a_plain_token_is_refused(archive: Archive) -> None:
    with pytest.raises(ValueError, match="run_id"):
        await archive.append("../x", 0, b"x")


async def test_retention_deletes_logs_archived_before_the_cutoff_and_keeps_the_rest(archive: Archive) -> None:
    run = new_run()
    await archive.append(run, 0, b"old news")
    await archive.finalize(run, 8)
    await archive.put_file(run, "artifact", Path(__file__))

    assert await prune_archive(archive, 0, datetime.now(UTC) + timedelta(days=365)) == []
    assert await prune_archive(archive, 7, datetime.now(UTC)) == []
    assert await archive.exists(run)

    assert await prune_archive(archive, 7, datetime.now(UTC) + timedelta(days=8)) == [run]
    assert not await archive.exists(run)
    assert await archive.list_files(run) == []


async def test_retention_also_deletes_partial_logs_whose_end_never_came(archive: Archive) -> None:
    abandoned = new_run()
    await archive.append(abandoned, 0, b"the dispatcher died here")
    assert await prune_archive(archive, 1, datetime.now(UTC) + timedelta(days=2)) == [abandoned]
    assert await archive.written(abandoned) == 0


def test_an_s3_archive_without_a_bucket_is_refused_in_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="s3_bucket"):
        Settings(data_dir=tmp_path, archive_kind="s3")


async def test_an_s3_bucket_that_does_not_exist_is_refused_at_start(s3_endpoint: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        archive_kind="s3",
        s3_bucket="no-such-bucket",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="test-key",
        s3_secret_access_key=SecretStr("test-secret"),
    )
    with pytest.raises(ArchiveError, match="s3_bucket"):
        await open_archive(settings)
