"""One active instance of a worker across processes: a PostgreSQL advisory lock per role.

Chain watchers (one per chain), the reconciler and the alert evaluator must run once per
deployment however many ``depositd worker`` processes there are. Each process asks for a
session-level advisory lock named after the role on a connection of its own: the one that
gets it runs the role, the others wait as standbys and ask again every ``retry_seconds``.
The lock lives as long as the leader's connection: when the leader dies (or its connection
breaks) PostgreSQL releases it and a standby takes over at its next try. The leader checks
its connection every ``retry_seconds`` too and stops the role at once if the connection is
gone, so two never run together for longer than that.

On SQLite there is one process: the role just runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from depositd.db.engine import Database

log = structlog.get_logger("depositd.leadership")


def lock_key(role: str) -> int:
    """A stable signed 64-bit key for the role's advisory lock."""
    digest = hashlib.sha256(f"depositd:{role}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def while_leading(
    db: Database,
    role: str,
    run: Callable[[], Awaitable[None]],
    *,
    retry_seconds: float = 1.0,
    on_change: Callable[[bool], None] = lambda _leading: None,
) -> None:
    """Run ``run`` only while this process holds ``role``'s lock; until cancelled.

    ``on_change(True)`` is called when this process becomes the leader, ``on_change(False)``
    when it waits as a standby.
    """
    if db.is_sqlite:
        on_change(True)
        await run()
        return
    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    key = lock_key(role)
    on_change(False)
    while True:
        try:
            connection = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("leadership_connect_failed", role=role, error=type(exc).__name__)
            await asyncio.sleep(retry_seconds)
            continue
        try:
            await _acquire(connection, key, retry_seconds)
            log.info("leading", role=role)
            on_change(True)
            await _lead(connection, run, retry_seconds)
            log.warning("leadership_lost", role=role)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("leadership_lost", role=role, error=type(exc).__name__)
        finally:
            on_change(False)
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
        await asyncio.sleep(retry_seconds)


async def _acquire(connection: asyncpg.Connection, key: int, retry_seconds: float) -> None:
    """Return once the lock is ours: try, and try again every ``retry_seconds``."""
    acquired = False
    while not acquired:
        acquired = await connection.fetchval("SELECT pg_try_advisory_lock($1)", key)
        if not acquired:
            await asyncio.sleep(retry_seconds)


async def _lead(
    connection: asyncpg.Connection, run: Callable[[], Awaitable[None]], check_seconds: float
) -> None:
    """Run the role until it returns or the lock's connection stops answering."""
    task = asyncio.ensure_future(run())
    try:
        while not task.done():
            done, _ = await asyncio.wait([task], timeout=check_seconds)
            if done:
                break
            try:
                await asyncio.wait_for(connection.fetchval("SELECT 1"), check_seconds * 5)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return  # the lock may be gone: stop leading now
        task.result()  # re-raises what the role raised, for the supervisor to restart it
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
