"""The dashboard's pages and actions, each for the signed-in operator's merchant only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from depositd.api.schemas import DepositOut, Transition
from depositd.dashboard.auth import SignedIn, checked_form, context, signed_in
from depositd.dashboard.charts import svg_chart
from depositd.dashboard.i18n import request_language, translator
from depositd.dashboard.rendering import fragment, guard, page
from depositd.db.repositories import DepositFilter
from depositd.domain.deposits import DepositStatus
from depositd.errors import DepositdError, NotFound
from depositd.services import dashboard, deliveries, queries, reviews

router = APIRouter(prefix="/dashboard", include_in_schema=False)

#: deposits the live feed shows
FEED_SIZE = 25


def _deposits(request: Request, found: list[Any]) -> list[DepositOut]:
    ctx = context(request)
    language, _ = request_language(request)
    return [DepositOut.of(d, ctx.assets[d.asset], language) for d in found]


async def _feed(request: Request, merchant_id: str) -> list[DepositOut]:
    found = await queries.list_deposits(
        context(request).db, DepositFilter(merchant_id=merchant_id), None, FEED_SIZE
    )
    return _deposits(request, found.items)


async def _charts(request: Request, merchant_id: str) -> dict[str, Any]:
    t = translator(request_language(request)[0])
    drawn = await dashboard.charts(context(request).db, merchant_id)
    return {
        "deposits": svg_chart(drawn.deposits_per_minute, t("chart_deposits"), bars=True),
        "latency": svg_chart(drawn.delivery_latency_ms, t("chart_latency")),
        "depth": svg_chart(drawn.outbox_depth, t("chart_depth")),
    }


def _view(
    request: Request,
    session: SignedIn,
    template: str,
    nav: str,
    status_code: int = 200,
    **values: Any,
) -> Response:
    return page(
        request,
        template,
        status_code,
        operator=session.operator,
        csrf=session.csrf,
        nav=nav,
        notice=request.query_params.get("notice"),
        error=request.query_params.get("error"),
        **values,
    )


@router.get("")
async def overview(request: Request) -> Response:
    session = await signed_in(request)
    ctx = context(request)
    merchant_id = session.operator.merchant_id
    window = timedelta(days=request.app.state.reconcile_window_days)
    sla = timedelta(seconds=request.app.state.reconcile_sla_seconds)
    report = await dashboard.reconciliation(ctx.db, ctx.providers, merchant_id, window, sla)
    return _view(
        request,
        session,
        "overview.html",
        "overview",
        deposits=await _feed(request, merchant_id),
        charts=await _charts(request, merchant_id),
        alerts=await ctx.alerts.active(merchant_id),
        report=report,
    )


@router.get("/api/feed")
async def feed(request: Request) -> Response:
    """The live feed's rows, for the overview to swap in (polled every second or two)."""
    session = await signed_in(request)
    deposits = await _feed(request, session.operator.merchant_id)
    rows = fragment(request, "_feed_rows.html", deposits=deposits)
    return guard(JSONResponse({"rows": rows, "latest": deposits[0].id if deposits else None}))


@router.get("/api/charts")
async def charts(request: Request) -> Response:
    session = await signed_in(request)
    drawn = await _charts(request, session.operator.merchant_id)
    return guard(JSONResponse({name: str(svg) for name, svg in drawn.items()}))


@router.get("/deposits/{deposit_id}")
async def deposit_page(request: Request, deposit_id: str) -> Response:
    session = await signed_in(request)
    ctx = context(request)
    try:
        found = await dashboard.deposit_timeline(ctx.db, session.operator.merchant_id, deposit_id)
    except NotFound:
        return _view(request, session, "message.html", "overview", 404, message="not_found")
    language, _ = request_language(request)
    asset = ctx.assets[found.deposit.asset]
    return _view(
        request,
        session,
        "deposit.html",
        "overview",
        deposit=DepositOut.of(found.deposit, asset, language),
        transitions=[Transition.of(t, language) for t in found.transitions],
        entries=found.entries,
        decimals=asset.decimals,
        deliveries=found.deliveries,
        held=found.deposit.status is DepositStatus.HELD,
    )


@router.get("/endpoints")
async def endpoints_page(request: Request) -> Response:
    session = await signed_in(request)
    health = await dashboard.endpoint_health(context(request).db, session.operator.merchant_id)
    return _view(request, session, "endpoints.html", "endpoints", endpoints=health,
                 window=dashboard.HEALTH_WINDOW)  # fmt: skip


@router.get("/deliveries")
async def deliveries_page(request: Request) -> Response:
    session = await signed_in(request)
    failing = await dashboard.failing_deliveries(context(request).db, session.operator.merchant_id)
    return _view(request, session, "deliveries.html", "deliveries", deliveries=failing)


@router.get("/holds")
async def holds_page(request: Request) -> Response:
    session = await signed_in(request)
    where = DepositFilter(merchant_id=session.operator.merchant_id, status="held")
    held = await queries.list_deposits(context(request).db, where, None, 200)
    return _view(request, session, "holds.html", "holds", deposits=_deposits(request, held.items))


@router.get("/alerts")
async def alerts_page(request: Request) -> Response:
    session = await signed_in(request)
    alerts = await context(request).alerts.active(session.operator.merchant_id)
    return _view(request, session, "alerts.html", "alerts", alerts=alerts)


@router.get("/reconciliation")
async def reconciliation_page(request: Request) -> Response:
    session = await signed_in(request)
    ctx = context(request)
    window = timedelta(days=request.app.state.reconcile_window_days)
    sla = timedelta(seconds=request.app.state.reconcile_sla_seconds)
    report = await dashboard.reconciliation(
        ctx.db, ctx.providers, session.operator.merchant_id, window, sla
    )
    return _view(request, session, "reconciliation.html", "reconciliation", report=report)


def _back(fields: dict[str, str], default: str, **outcome: str) -> Response:
    target = fields.get("back", "")
    if not target.startswith("/dashboard") or target.startswith("//"):
        target = default
    query = "&".join(f"{name}={value}" for name, value in outcome.items())
    return guard(RedirectResponse(f"{target.split('?')[0]}?{query}", 303))


def _actor(session: SignedIn) -> str:
    """Who the audit log names for an operator's action in the dashboard."""
    return f"operator:{session.operator.id}"


def _error(exc: DepositdError) -> str:
    return quote(str(exc)[:300], safe="")


@router.post("/deliveries/{delivery_id}/retry")
async def retry(request: Request, delivery_id: int) -> Response:
    session = await signed_in(request)
    fields = await checked_form(request, session)
    try:
        await deliveries.retry_delivery(
            context(request).db,
            session.operator.merchant_id,
            delivery_id,
            actor=_actor(session),
        )
    except DepositdError as exc:
        return _back(fields, "/dashboard/deliveries", error=_error(exc))
    return _back(fields, "/dashboard/deliveries", notice="retried")


@router.post("/endpoints/{endpoint_id}/replay")
async def replay(request: Request, endpoint_id: str) -> Response:
    session = await signed_in(request)
    fields = await checked_form(request, session)
    try:
        after = int(fields.get("after_seq", ""))
        await deliveries.replay_endpoint(
            context(request).db,
            session.operator.merchant_id,
            endpoint_id,
            after_seq=after,
            actor=_actor(session),
        )
    except ValueError:
        return _back(fields, "/dashboard/endpoints", error="seq%3A%20a%20number")
    except DepositdError as exc:
        return _back(fields, "/dashboard/endpoints", error=_error(exc))
    return _back(fields, "/dashboard/endpoints", notice="replayed")


async def _review(request: Request, deposit_id: str, *, approve: bool) -> Response:
    session = await signed_in(request)
    fields = await checked_form(request, session)
    ctx = context(request)
    try:
        await reviews.review_deposit(
            ctx.db,
            ctx.assets,
            session.operator.merchant_id,
            deposit_id,
            approve=approve,
            actor=_actor(session),
        )
    except DepositdError as exc:
        return _back(fields, "/dashboard/holds", error=_error(exc))
    return _back(fields, "/dashboard/holds", notice="approved" if approve else "rejected")


@router.post("/deposits/{deposit_id}/approve")
async def approve(request: Request, deposit_id: str) -> Response:
    return await _review(request, deposit_id, approve=True)


@router.post("/deposits/{deposit_id}/reject")
async def reject(request: Request, deposit_id: str) -> Response:
    return await _review(request, deposit_id, approve=False)
