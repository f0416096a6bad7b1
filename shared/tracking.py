"""Tracking positions: how far a tailing reader got, saved in the same transaction as its effects."""

from __future__ import annotations

import asyncpg


async def load_position(conn: asyncpg.Connection, name: str) -> int:
    value = await conn.fetchval("SELECT position FROM tracking WHERE name = $1", name)
    return int(value) if value is not None else 0


async def save_position(conn: asyncpg.Connection, name: str, position: int) -> None:
    await conn.execute(
        "INSERT INTO tracking (name, position) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        name,
        position,
    )


async def save_position_lazily(conn: asyncpg.Connection, name: str, position: int) -> None:
    """`save_position` without waiting for the commit to reach the disk (`synchronous_commit` off for
    this one statement's transaction), for a position that is only a place to resume: lost in a crash of
    the database server, it falls back to an earlier one, and what is redone from there is harmless.
    It spares the disk a flush that would otherwise queue with the event store's own commits."""
    await conn.execute(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) "
        "INSERT INTO tracking (name, position) SELECT $1, $2 FROM relaxed "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        name,
        position,
    )
