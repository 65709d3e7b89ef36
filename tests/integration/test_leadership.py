"""One active instance per role: on PostgreSQL an advisory lock elects a leader, a standby
takes over within seconds when the leader dies or loses its connection; on SQLite (one
process) the role simply runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from sqlalchemy import text

from depositd.db.engine import Database
from depositd.db.leadership import while_leading


class Roles:
    """Instances of a test role: which run now, and whether two ever ran together."""

    def __init__(self) -> None:
        self.running: list[str] = []
        self.overlapped = False

    def role(self, name: str) -> Callable[[], asyncio.Future[None]]:
        async def run() -> None:
            self.running.append(name)
            self.overlapped |= len(self.running) > 1
            try:
                await asyncio.Event().wait()
            finally:
                self.running.remove(name)

        return lambda: asyncio.ensure_future(run())

    async def until(self, expected: list[str], within: float = 10) -> float:
        started = time.monotonic()
        while self.running != expected:
            assert time.monotonic() - started < within, (self.running, expected)
            await asyncio.sleep(0.05)
        return time.monotonic() - started


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_one_leader_and_a_standby_that_takes_over(db: Database) -> None:
    roles = Roles()
    a = asyncio.create_task(while_leading(db, "test", roles.role("a"), retry_seconds=0.2))
    await roles.until(["a"])
    leading_b: list[bool] = []
    b = asyncio.create_task(
        while_leading(db, "test", roles.role("b"), retry_seconds=0.2, on_change=leading_b.append)
    )
    try:
        if db.is_sqlite:  # one process: nothing to elect, every instance runs
            await roles.until(["a", "b"])
            return
        await asyncio.sleep(1.0)
        assert roles.running == ["a"]  # b stands by
        assert leading_b == [False]
        await _stop(a)  # the leader dies: its connection, and the lock, go with it
        took = await roles.until(["b"])
        assert took < 3, took
        assert leading_b == [False, True]

        # the leader's connection is cut under it: it stops at once and leads again later
        async with db.writer.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted"
                    " AND database = (SELECT oid FROM pg_database"
                    "                 WHERE datname = current_database())"
                )
            )
            await conn.commit()
        assert killed == 1
        await roles.until([])
        await roles.until(["b"])
        assert not roles.overlapped
    finally:
        await _stop(a)
        await _stop(b)
