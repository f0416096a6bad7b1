"""Archives of run logs and files (a directory or S3), and reading a run's log live or archived."""

from shared.archive.base import (
    Archive,
    ArchivedLog,
    ArchiveEntry,
    ArchiveError,
    LogGap,
    StoredFile,
)
from shared.archive.factory import open_archive
from shared.archive.file import FileArchive
from shared.archive.retention import prune_archive
from shared.archive.s3 import S3Archive

__all__ = [
    "Archive",
    "ArchiveEntry",
    "ArchiveError",
    "ArchivedLog",
    "FileArchive",
    "LogGap",
    "S3Archive",
    "StoredFile",
    "open_archive",
    "prune_archive",
]
