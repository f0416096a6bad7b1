"""The servers the services need: embedded NATS and PostgreSQL under the data dir, or the user's own.

`BATCHYARD_NATS_URL` / `BATCHYARD_PG_DSN`, when set, name servers the user runs; then nothing is started
for that part. Otherwise NATS keeps its JetStream files in `<data_dir>/nats` and PostgreSQL its cluster
in `<data_dir>/pg` (database `batchyard`), so the next `up` finds the same data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from cli.errors import CliError
from shared.embedded import EmbeddedNats, EmbeddedPostgres, ensure_database, start_nats, start_postgres
from shared.settings import Settings

DATABASE = "batchyard"


@dataclass
class BackingServers:
    nats_url: str
    pg_dsn: str
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()


def start_backing_servers(
    settings: Settings, data_dir: Path, *, orphan_nats_pid: int | None, say: Callable[[str], None]
) -> BackingServers:
    """Start what the environment does not name; blocking, so `up` runs it in a thread."""
    servers = BackingServers(nats_url=settings.nats_url, pg_dsn=settings.pg_dsn)
    try:
        if "nats_url" in settings.model_fields_set:
            say(f"NATS: {settings.nats_url} (from BATCHYARD_NATS_URL)")
        else:
            nats_dir = data_dir / "nats"
            stop_orphaned_nats(orphan_nats_pid, nats_dir, say)
            servers.nats = start_nats(nats_dir)
            servers.nats_url = servers.nats.url
            say(f"NATS: embedded at {servers.nats_url}, JetStream in {nats_dir / 'jetstream'}")
        if "pg_dsn" in settings.model_fields_set:
            say(f"PostgreSQL: {redact(settings.pg_dsn)} (from BATCHYARD_PG_DSN)")
        else:
            servers.postgres = start_postgres(data_dir / "pg")
            ensure_database(servers.postgres.dsn(), DATABASE)
            servers.pg_dsn = servers.postgres.dsn(DATABASE)
            say(f"PostgreSQL: embedded, data in {data_dir / 'pg'}, database {DATABASE} on a unix socket")
    except Exception as exc:
        servers.stop()
        raise CliError(f"could not start the embedded servers: {exc}") from exc
    return servers


def stop_orphaned_nats(pid: int | None, nats_dir: Path, say: Callable[[str], None]) -> None:
    """A NATS left running by an `up` that was killed outright would hold the JetStream directory."""
    if pid is None:
        return
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if "nats-server" in process.name() and str(nats_dir) in " ".join(process.cmdline()):
            say(f"stopping the NATS server (pid {pid}) left over from an earlier run")
            process.terminate()
            try:
                process.wait(10)
            except psutil.TimeoutExpired:
                process.kill()


def redact(dsn: str) -> str:
    """A DSN fit for a terminal: the password replaced."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
