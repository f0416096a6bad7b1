"""The dispatcher's own tunables, read from `BATCHYARD_DISPATCHER_*` beside the shared settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DispatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_DISPATCHER_", frozen=True, extra="ignore")

    lease_ttl_s: float = Field(
        default=15.0,
        gt=0,
        description="How long a dispatcher that stopped heartbeating keeps its runs before they are lost.",
    )
    start_concurrency: int = Field(default=64, ge=1, description="Rendered runs being started at once.")
    shutdown_grace_s: float = Field(
        default=60.0, gt=0, description="Longest a shutdown waits for stopped runs to be recorded."
    )
    log_chunk_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest log message; 256 KiB moved 1 GiB at ~530 MB/s where 64 KiB managed ~320.",
    )
    log_in_flight_per_run: int = Field(default=16, ge=1)
    log_in_flight_total: int = Field(
        default=128, ge=1, description="Chunks awaiting JetStream across all runs: bounds memory."
    )
    detach_on_shutdown: bool = Field(
        default=False,
        description="On shutdown, leave Docker and Nomad runs running for the next dispatcher to adopt "
        "instead of stopping them (a rolling restart); local runs are stopped either way.",
    )
    schedule_poll_s: float = Field(
        default=0.2, gt=0, le=10, description="How often the scheduler reads job changes and run ends."
    )
    schedule_lead_s: float = Field(
        default=10.0,
        ge=0,
        description="How long before its tick a scheduled run is requested, rendered and prepared, so only "
        "its start is left for the tick (at most half the time since the previous tick; 0 turns it off). "
        "Changes to a job within this time apply from its next tick (decision 0175).",
    )
    nomad_periodic_resync_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the schedules handed to Nomad are checked against Nomad even when nothing "
        "changed (a parent stopped by hand, a renderer or cluster that was down).",
    )
