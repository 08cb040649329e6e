"""An engine's process group as Linux shows it in ``/proc``: who is in it, when it is gone, and
which POSIX shared-memory segments it holds.

vLLM runs as several processes (API server, EngineCore, Worker, a resource tracker) that pass
work through segments in ``/dev/shm`` — about 420 MB per engine on a CPU host. They are removed
by the engine's own resource tracker on a clean exit, so a stop must wait for the whole group,
not just its leader; after a SIGKILL of the group nobody removes them, so the supervisor
remembers them and removes what is left (a crash loop would otherwise fill memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

PROC = Path("/proc")
SHM = "/dev/shm/"  # noqa: S108  (read from the maps, never written to)


def members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the group. Without ``/proc``, the leader if it lives."""
    if not PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            found.append(int(entry.name))
    return found


async def wait_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of the group exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(members, pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def shared_memory(pgid: int) -> set[Path]:
    """The ``/dev/shm`` files the group's processes have mapped now."""
    segments: set[Path] = set()
    for pid in members(pgid):
        try:
            maps = (PROC / str(pid) / "maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            start = line.find(SHM)
            if start != -1:
                segments.add(Path(line[start:].removesuffix(" (deleted)")))
    return segments


def remove(segments: set[Path]) -> list[Path]:
    """Unlink the segments that still exist; the ones removed. One that cannot be removed (gone
    already, or not ours to remove) is skipped."""
    removed = []
    for path in segments:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed
