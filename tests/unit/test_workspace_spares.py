"""Run workspaces made ahead (services/dispatcher/workspace.py): a run takes a spare that is private and
empty, never one another run took, and a run that finds none makes its own as before."""

from __future__ import annotations

import asyncio
import stat
from typing import cast

import pytest

from services.dispatcher import workspace
from services.dispatcher.workspace import RunWorkspace, _Spares
from shared.archive.base import Archive

NO_ARCHIVE = cast(Archive, None)


@pytest.fixture
def spares(monkeypatch: pytest.MonkeyPatch) -> _Spares:
    fresh = _Spares(2)
    monkeypatch.setattr(workspace, "spares", fresh)
    return fresh


async def filled(spares: _Spares) -> None:
    spares.refill_soon()
    for _ in range(200):
        if len(spares._ready) == spares.size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the spares were never made")


async def test_a_run_takes_a_private_empty_spare_made_ahead_and_its_taking_makes_the_next(
    spares: _Spares,
) -> None:
    await filled(spares)
    waiting = list(spares._ready)
    planned = RunWorkspace.plan("run-1", None, False)
    assert planned.made and planned.root in waiting
    assert stat.S_IMODE(planned.root.stat().st_mode) == 0o700
    assert list(planned.artifacts.iterdir()) == [] and planned.state.read_bytes() == b""
    await planned.create(NO_ARCHIVE)
    other = RunWorkspace.plan("run-2", None, False)
    assert other.root != planned.root
    await filled(spares)
    assert planned.root not in spares._ready and other.root not in spares._ready
    await planned.remove()
    await other.remove()
    await spares.remove_all()


async def test_a_run_that_finds_no_spare_makes_its_own_workspace_named_after_it(spares: _Spares) -> None:
    planned = RunWorkspace.plan("run-3", None, False)
    assert not planned.made and "run-3" in planned.root.name and not planned.root.exists()
    await planned.create(NO_ARCHIVE)
    assert planned.artifacts.is_dir() and planned.state.is_file()
    assert stat.S_IMODE(planned.root.stat().st_mode) == 0o700
    await planned.remove()
    await spares.remove_all()


async def test_spares_are_removed_on_shutdown(spares: _Spares) -> None:
    await filled(spares)
    roots = list(spares._ready)
    await spares.remove_all()
    assert spares._ready == [] and not any(root.exists() for root in roots)
