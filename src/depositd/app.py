"""The ASGI application: API routes, problem responses, body limit, health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from depositd import __version__
from depositd.api import problems
from depositd.api.deps import AppContext
from depositd.api.limits import BodySizeLimit
from depositd.api.routes import router
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.migrate import is_current
from depositd.services.group_commit import Recorder


def create_app(config: Config, db: Database | None = None) -> FastAPI:
    """Build the app; it owns (and disposes) ``db`` unless one is passed in."""
    owns_db = db is None
    database = db if db is not None else Database(config.database_url())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_db:
            await database.dispose()

    app = FastAPI(
        title="depositd",
        version=__version__,
        summary="Credit every crypto deposit exactly once and tell everyone who needs to know.",
        lifespan=lifespan,
    )
    assets = config.asset_book()
    app.state.ctx = AppContext(
        db=database,
        assets=assets,
        chains=frozenset(config.chains),
        recorder=Recorder(database, assets),
    )
    problems.install(app)
    app.include_router(router)

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="The database answers and its schema is current")
    async def readyz() -> JSONResponse:
        try:
            async with database.reader.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await is_current(database)
        except Exception as exc:  # any database failure means "not ready", never a crash
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, 503)
        if not current:
            return JSONResponse({"status": "unavailable", "error": "migrations pending"}, 503)
        return JSONResponse({"status": "ok"})

    app.add_middleware(BodySizeLimit, max_bytes=config.server.max_body_bytes)
    return app
