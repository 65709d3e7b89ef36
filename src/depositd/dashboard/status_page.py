"""An end user's page for one deposit order: where to pay, the QR code, live progress.

``/pay/{order_id}?t=<token>``: the token is the order id signed with the dashboard key
(``services.status_links``), so only someone given the link can open it, and order ids
cannot be tried one after another. A wrong or missing token is answered like an unknown
order. The page polls ``/pay/{order_id}/progress?t=…`` for the confirmations as they rise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from depositd.api.schemas import OrderOut
from depositd.dashboard.auth import DashboardOff, context
from depositd.dashboard.i18n import request_language
from depositd.dashboard.rendering import fragment, guard, page
from depositd.errors import NotFound
from depositd.services import orders

router = APIRouter(prefix="/pay", include_in_schema=False)


async def _order(request: Request, order_id: str) -> tuple[OrderOut, Any] | None:
    ctx = context(request)
    if ctx.status_links is None:
        raise DashboardOff()
    token = request.query_params.get("t")
    if not ctx.status_links.check(order_id, token):
        return None
    try:
        detail = await orders.get_order(ctx.db, ctx.chain_ids, ctx.assets, None, order_id)
    except NotFound:
        return None
    language, _ = request_language(request)
    asset = ctx.assets[detail.order.asset]
    return OrderOut.of(detail, asset, language, ctx.status_links.url(order_id)), asset


@router.get("/{order_id}")
async def status_page(request: Request, order_id: str) -> Response:
    found = await _order(request, order_id)
    if found is None:
        return page(request, "pay_missing.html", 404)
    order, asset = found
    return page(
        request,
        "pay.html",
        order=order,
        progress=order.progress,
        symbol=asset.symbol,
        address=order.address,
        qr=order.qr_svg,
        progress_url=f"/pay/{order_id}/progress?t={request.query_params.get('t', '')}",
    )


@router.get("/{order_id}/progress")
async def progress(request: Request, order_id: str) -> Response:
    found = await _order(request, order_id)
    if found is None:
        return guard(JSONResponse({"error": "not found"}, 404))
    order, asset = found
    html = fragment(request, "_pay_progress.html", symbol=asset.symbol, progress=order.progress)
    return guard(
        JSONResponse(
            {
                "status": order.progress.status,
                "deposits": [
                    {
                        "id": d.id,
                        "status": d.status,
                        "confirmations": d.confirmations,
                        "required_confirmations": d.required_confirmations,
                        "hint": d.hint,
                    }
                    for d in order.progress.deposits
                ],
                "html": html,
            }
        )
    )
