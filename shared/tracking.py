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
