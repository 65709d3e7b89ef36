"""Wake-ups across processes on PostgreSQL: ``LISTEN`` on the channel the events trigger uses.

A trigger on ``events`` (migration 0008) calls ``pg_notify('depositd_events', ...)`` in every
transaction that appends events; PostgreSQL delivers the notification when, and only if, that
transaction commits. Whoever waits for new events — the webhook sender, the WebSocket hub —
listens on one dedicated connection and is woken at once, whichever process wrote them.

A wake-up is only a hint: those who listen also poll, so a lost connection (or SQLite, which
has no such thing) costs speed, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from depositd.db.engine import Database

log = structlog.get_logger("depositd.notify")

#: the channel migration 0008's trigger notifies on
EVENTS_CHANNEL = "depositd_events"


class EventNotifications:
    """Calls ``wake`` whenever a transaction that appended events commits (PostgreSQL)."""

    def __init__(self, db: Database, wake: Callable[[], None]) -> None:
        self._db = db
        self._wake = wake
        self._connection: asyncpg.Connection | None = None

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def keep_listening(self) -> None:
        """(Re)open the listening connection if it is not open; a no-op on SQLite.

        On failure it logs and returns: the caller polls meanwhile and asks again later.
        """
        if self._db.is_sqlite or self.listening:
            return
        await self.close()
        dsn = self._db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            connection = await asyncpg.connect(dsn)
            await connection.add_listener(EVENTS_CHANNEL, self._notified)
        except Exception as exc:  # any failure: polling carries on, the next call retries
            log.warning("listen_failed", channel=EVENTS_CHANNEL, error=type(exc).__name__)
            return
        self._connection = connection
        self._wake()  # anything committed while nobody listened

    def _notified(self, *_notification: object) -> None:
        self._wake()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):  # it is going away either way
                await connection.close(timeout=5)


async def wake_on_events(
    db: Database, wake: Callable[[], None], *, check_seconds: float = 5.0
) -> None:
    """Until cancelled: call ``wake`` on every commit that appended events, re-opening the
    listening connection within ``check_seconds`` when it is lost. Returns at once on SQLite."""
    if db.is_sqlite:
        return
    notifications = EventNotifications(db, wake)
    try:
        while True:
            await notifications.keep_listening()
            await asyncio.sleep(check_seconds)
    finally:
        await notifications.close()
