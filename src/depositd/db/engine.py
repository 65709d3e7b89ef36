"""Connections to SQLite (WAL, one writer) or PostgreSQL (asyncpg), set up the same way."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from depositd.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: how long the hot path keeps a prepared statement (and its plan) before preparing it again
STATEMENT_LIFETIME_SECONDS = 1


def _big_add(left: str | None, right: str | None) -> str | None:
    """Exact addition of decimal-text amounts (SQLite's own ``+`` goes through REAL).

    NULL stays NULL: it marks an account that keeps no running balance.
    """
    if left is None or right is None:
        return None
    return str(int(left) + int(right))


class Database:
    """Engines for one database.

    SQLite allows one writer at a time, so writes go through a one-connection engine whose
    transactions start with ``BEGIN IMMEDIATE`` (the write lock is taken up front: no
    mid-transaction SQLITE_BUSY), while reads use a pool of WAL readers. PostgreSQL uses one
    pool for both.
    """

    def __init__(self, url: str | URL, *, pool_size: int = 10) -> None:
        #: who owns an address or external user id; such a mapping never changes once made,
        #: so services may remember it for the life of this object
        self.owner_cache: dict[tuple[str, str, str], Any] = {}
        self._driver_pool: asyncpg.Pool | None = None
        self._driver_pool_lock = asyncio.Lock()
        self._pool_size = pool_size
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self.url = self.url.set(drivername="sqlite+aiosqlite")
            self._prepare_sqlite_file()
            self.writer = self._sqlite_engine(immediate=True, pool_size=1)
            self.reader = self._sqlite_engine(immediate=False, pool_size=4)
            # Recording runs its whole transaction on a plain sqlite3 connection in one
            # thread of its own: a thread hop per step instead of several per statement.
            self.recorder_engine = create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                pool_size=1,
                max_overflow=0,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            )
            _configure_sqlite(self.recorder_engine, immediate=True)
            self.recorder_thread = ThreadPoolExecutor(1, thread_name_prefix="depositd-sqlite")
            #: one recording transaction at a time: its steps queue on the one thread, and a
            #: second transaction waiting there for the one connection would block them
            self.recorder_lock = asyncio.Lock()
        elif self.dialect == "postgresql":
            self.url = self.url.set(drivername="postgresql+asyncpg")
            self.writer = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False
            )
            self.reader = self.writer
        else:
            raise ConfigError(f"database.url: unsupported database {self.dialect!r}")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def safe_url(self) -> str:
        """The URL with any password masked, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    async def driver_pool(self) -> asyncpg.Pool:
        """A plain asyncpg pool (PostgreSQL only) for the hot write path, made on first use.

        SQLAlchemy's pool and greenlet bridge cost more per transaction than the recording
        path's own statements; that path alone talks to asyncpg directly.
        """
        async with self._driver_pool_lock:  # many first callers at once make one pool
            if self._driver_pool is None:
                self._driver_pool = await self._create_driver_pool()
        return self._driver_pool

    async def _create_driver_pool(self) -> asyncpg.Pool:
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # Statements are prepared again every second, so their plans follow the tables as they
        # grow. PostgreSQL switches a prepared statement to a generic plan after five runs and
        # keeps it until the table is next analyzed (autovacuum: a minute or more): a plan made
        # while a fresh database was empty (a sequential scan of ``deposits`` to lock a batch by
        # identity) stayed while a burst of callbacks filled the table, 3-9 ms a batch.
        # ``plan_cache_mode = force_custom_plan`` would plan every run instead, but it applies
        # to the foreign-key checks' own statements too: one planning per row checked, which
        # doubled the ledger statement's time for a block's deposits.
        return await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=self._pool_size,
            reset=_keep_session,
            max_cached_statement_lifetime=STATEMENT_LIFETIME_SECONDS,
        )

    async def dispose(self) -> None:
        if self.is_sqlite:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.recorder_thread, self.recorder_engine.dispose)
            self.recorder_thread.shutdown(wait=True)
        if self._driver_pool is not None:
            await self._driver_pool.close()
            self._driver_pool = None
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    def _prepare_sqlite_file(self) -> None:
        database = self.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    def _sqlite_engine(self, *, immediate: bool, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=0,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine.sync_engine, immediate=immediate)
        return engine


def _configure_sqlite(engine: Engine, *, immediate: bool) -> None:
    """WAL, foreign keys, a busy timeout, ``big_add``, and our own BEGIN on every connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # we issue BEGIN ourselves (below) instead of the driver's implicit one
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
        dbapi_connection.create_function("big_add", 2, _big_add, deterministic=True)

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """A released pool connection keeps its session as it is.

    asyncpg's default sends a reset query (unlisten, close cursors, reset settings, release
    advisory locks) on every release: a round trip per transaction for state the hot path never
    creates. The pool still rolls back a transaction left open before calling this.
    """
