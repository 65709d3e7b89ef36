"""The ASGI application: API routes, problem responses, body limit, health checks."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.types import Receive, Scope, Send

from depositd import __version__, metrics
from depositd.api import auth, callbacks, deliveries, endpoints, kyc, me, problems, ws
from depositd.api.deps import AppContext
from depositd.api.limits import BodySizeLimit
from depositd.api.request_ids import RequestIds
from depositd.api.routes import router
from depositd.api.throttle import Throttle
from depositd.config import Config
from depositd.dashboard import auth as dashboard_auth
from depositd.dashboard import pages, status_page
from depositd.db.engine import Database
from depositd.db.migrate import is_current
from depositd.delivery.hub import EventHub
from depositd.providers.payments import PaymentGateways
from depositd.services.alert_source import StoredAlerts
from depositd.services.callbacks import CallbackLog, ClaimVerifier, providers_from
from depositd.services.end_users import EndUsers
from depositd.services.group_commit import Recorder
from depositd.services.kyc import Kyc
from depositd.services.status_links import StatusLinks
from depositd.workers.supervisor import Workers


class _Api(FastAPI):
    """FastAPI behind two plain ASGI layers of ours: each request's id (``RequestIds``), then
    provider callbacks (``callbacks.CallbackIngress``), served before the framework's own
    middleware and routing; oversized callbacks are stored before they are refused, so the
    body limit (``BodySizeLimit``, inside) never sees them."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._front = RequestIds(
            callbacks.CallbackIngress(super().__call__, context=lambda: self.state.ctx)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


def create_app(
    config: Config,
    db: Database | None = None,
    *,
    workers: bool = False,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """Build the app; it owns (and disposes) ``db`` unless one is passed in.

    With ``workers`` it also runs the background loops (chain watchers, order expiry) while
    it serves. ``on_shutdown`` runs last when the server stops — the place for clean-up, as
    uvicorn ends the process with the signal that stopped it once it has shut down.
    """
    owns_db = db is None
    database = db if db is not None else Database(config.database_url())
    assets = config.asset_book()
    background = Workers(config, database, assets) if workers else None
    verifier = ClaimVerifier(config, assets)
    payments = PaymentGateways.from_config(config)
    signer = config.dashboard.signer()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if background is not None:
            background.start()
        try:
            yield
        finally:
            await _app.state.event_hub.close()  # ends the WebSocket streams
            if background is not None:
                await background.stop()
            await verifier.close()
            await payments.close()
            if owns_db:
                await database.dispose()
            if on_shutdown is not None:
                await on_shutdown()

    app = _Api(
        title="depositd",
        version=__version__,
        summary="Credit every crypto deposit exactly once and tell everyone who needs to know.",
        lifespan=lifespan,
    )
    app.state.ctx = AppContext(
        db=database,
        assets=assets,
        chains=frozenset(config.chains),
        recorder=Recorder(database, assets),
        chain_ids={name: chain.chain_id for name, chain in config.chains.items()},
        delivery=config.delivery,
        callbacks=CallbackLog(database),
        end_users=EndUsers(
            database,
            config.end_users,
            config.email.email_sender(),
            config.email.from_address,
        ),
        kyc=Kyc(database, config.end_users.sealer()),
        auth_throttle=Throttle(config.end_users.auth_requests_per_minute),
        providers=providers_from(config),
        process_callbacks_inline=config.callbacks.process_inline,
        trusted_proxies=tuple(
            ipaddress.ip_network(network, strict=False) for network in config.server.trusted_proxies
        ),
        max_body_bytes=config.server.max_body_bytes,
        verifier=verifier,
        payments=payments,
        status_links=None
        if signer is None
        else StatusLinks(signer, config.dashboard.public_url or ""),
        alerts=StoredAlerts(database),
    )
    #: follows the committed event log for this process's WebSocket streams (``api.ws``)
    app.state.event_hub = EventHub(database)
    problems.install(app)
    auth.install(app)
    me.install(app)
    dashboard_auth.install(app, config.dashboard.session_hours)
    app.state.reconcile_window_days = config.reconcile.window_days
    app.state.reconcile_sla_seconds = config.reconcile.sla_seconds

    # routes are matched in the order they are added: health checks first, each included
    # router is a step for every request after it (provider callbacks are served before
    # any of this: callbacks.CallbackIngress)
    @app.get("/healthz", tags=["ops"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="The database answers and its schema is current; each chain watcher's lag",
    )
    async def readyz() -> JSONResponse:
        try:
            async with database.reader.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await is_current(database)
        except Exception as exc:  # any database failure means "not ready", never a crash
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, 503)
        if not current:
            return JSONResponse({"status": "unavailable", "error": "migrations pending"}, 503)
        watchers = background.watchers if background is not None else {}
        statuses = {name: w.status.as_dict() for name, w in watchers.items()}
        limit = config.server.ready_max_lag_blocks
        behind = [  # a standby (another process leads its chain) is not behind
            name
            for name, w in watchers.items()
            if w.status.leading
            and (not w.status.node_reachable or (w.status.lag_blocks or 0) > limit)
        ]
        if behind:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "error": f"watchers behind (over {limit} blocks) or their node is down: "
                    + ", ".join(sorted(behind)),
                    "watchers": statuses,
                },
                503,
            )
        return JSONResponse({"status": "ok", "watchers": statuses})

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        summary="Prometheus metrics (text exposition format)",
    )
    async def metrics_text() -> Response:
        stuck_after = timedelta(minutes=config.alerts.stuck_minutes)
        figures = await metrics.read_figures(database, stuck_after)
        leading = background.leading() if background is not None else []
        chains = [
            metrics.ChainGauge(s.chain, s.head, s.cursor, s.lag_blocks, s.node_reachable)
            for s in leading
        ]
        return Response(metrics.exposition(figures, chains), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    app.include_router(ws.router)
    app.include_router(endpoints.router)
    app.include_router(deliveries.router)
    app.include_router(auth.router)
    app.include_router(me.router)
    app.include_router(kyc.router)
    app.include_router(dashboard_auth.router)
    app.include_router(pages.router)
    app.include_router(status_page.router)
    app.mount(
        "/dashboard/static",
        StaticFiles(packages=[("depositd.dashboard", "static")]),
        name="dashboard-static",
    )

    app.add_middleware(BodySizeLimit, max_bytes=config.server.max_body_bytes)
    describe_openapi = app.openapi

    def openapi_with_callbacks() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = callbacks.document_callbacks(describe_openapi())
        return app.openapi_schema

    app.openapi = openapi_with_callbacks  # type: ignore[method-assign]
    return app
