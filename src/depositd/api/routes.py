"""The /v1 routes. Each one parses, calls one service, and shapes the answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from depositd.api.deps import AppContext, Caller, Context, Language, MerchantId
from depositd.api.schemas import (
    EXTERNAL_ID,
    AddressIn,
    AddressOut,
    BalancesOut,
    DepositDetail,
    DepositOut,
    DepositPage,
    EventOut,
    EventPage,
    ObservationIn,
    ObservationOut,
    OrderIn,
    OrderOut,
    OrderTerms,
    Timestamp,
    TransactionOut,
    TransactionPage,
    Transition,
    UserIn,
    UserOut,
    format_balance,
    problem_responses,
)
from depositd.db.repositories import DepositFilter
from depositd.domain.deposits import DepositStatus, Observation, ProviderRef, ToUser
from depositd.domain.money import format_amount, parse_amount
from depositd.errors import NotFound
from depositd.qr import qr_svg
from depositd.services import addresses, orders, queries, reviews, users
from depositd.services.merchants import KeyHolder

router = APIRouter(prefix="/v1", responses=problem_responses(400, 401, 404, 413, 422))

ExternalId = Annotated[str, Path(pattern=EXTERNAL_ID, description="your id for the user")]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of a page")]


@router.post(
    "/users",
    responses={200: {"model": UserOut, "description": "The user already existed"}},
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    tags=["users"],
    summary="Create a user (200 with the user if it exists)",
)
async def create_user(
    body: UserIn, merchant_id: MerchantId, ctx: Context, response: Response
) -> UserOut:
    user, created = await users.ensure_user(ctx.db, merchant_id, body.external_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return UserOut.of(user)


@router.get("/users/{external_id}", response_model=UserOut, tags=["users"])
async def get_user(external_id: ExternalId, merchant_id: MerchantId, ctx: Context) -> UserOut:
    return UserOut.of(await users.get_user(ctx.db, merchant_id, external_id))


@router.get(
    "/users/{external_id}/balances",
    response_model=BalancesOut,
    tags=["balances"],
    summary="A user's available and locked balance per asset",
)
async def get_balances(
    external_id: ExternalId, merchant_id: MerchantId, ctx: Context
) -> BalancesOut:
    return await balances_of(ctx, merchant_id, external_id)


async def balances_of(ctx: AppContext, merchant_id: str, external_id: str) -> BalancesOut:
    found = await queries.user_balances(ctx.db, merchant_id, external_id)
    return BalancesOut(
        user=UserOut.of(found.user),
        balances=[
            format_balance(ctx.assets[b.asset], b.available, b.locked) for b in found.balances
        ],
    )


@router.post(
    "/users/{external_id}/addresses",
    response_model=AddressOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": AddressOut, "description": "The user already had one on this chain"},
        409: problem_responses(409)[409],
    },
    tags=["addresses"],
    summary="The user's deposit address on a chain, derived from your xpub if new",
)
async def create_address(
    external_id: ExternalId,
    body: AddressIn,
    merchant_id: MerchantId,
    ctx: Context,
    response: Response,
) -> AddressOut:
    found = await addresses.deposit_address(
        ctx.db, ctx.chains, merchant_id, external_id, body.chain
    )
    if not found.created:
        response.status_code = status.HTTP_200_OK
    return AddressOut(chain=found.chain, address=found.address, index=found.index)


@router.get(
    "/users/{external_id}/addresses",
    response_model=list[AddressOut],
    tags=["addresses"],
    summary="The user's deposit addresses",
)
async def list_addresses(
    external_id: ExternalId, merchant_id: MerchantId, ctx: Context
) -> list[AddressOut]:
    found = await addresses.user_addresses(ctx.db, merchant_id, external_id)
    return [AddressOut(chain=a.chain, address=a.address, index=a.index) for a in found]


@router.get(
    "/deposits", response_model=DepositPage, tags=["deposits"], summary="Deposits, newest first"
)
async def list_deposits(
    merchant_id: MerchantId,
    ctx: Context,
    language: Language,
    status_: Annotated[DepositStatus | None, Query(alias="status")] = None,
    user: Annotated[str | None, Query(pattern=EXTERNAL_ID, description="external_id")] = None,
    asset: Annotated[str | None, Query(max_length=40)] = None,
    created_from: Annotated[Timestamp | None, Query(description="with a UTC offset")] = None,
    created_to: Annotated[Timestamp | None, Query(description="with a UTC offset")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DepositPage:
    _require_known(ctx, asset)
    where = DepositFilter(
        merchant_id=merchant_id,
        status=status_.value if status_ else None,
        external_id=user,
        asset=asset,
        created_from=created_from,
        created_to=created_to,
    )
    return await deposits_page(ctx, where, cursor, limit, language)


async def deposits_page(
    ctx: AppContext, where: DepositFilter, cursor: str | None, limit: int, language: str
) -> DepositPage:
    page = await queries.list_deposits(ctx.db, where, cursor, limit)
    return DepositPage(
        data=[DepositOut.of(d, ctx.assets[d.asset], language) for d in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/deposits/{deposit_id}",
    response_model=DepositDetail,
    tags=["deposits"],
    summary="A deposit with its transition history and hint",
)
async def get_deposit(
    deposit_id: Annotated[str, Path(max_length=40)],
    merchant_id: MerchantId,
    ctx: Context,
    language: Language,
) -> DepositDetail:
    return await deposit_detail(ctx, merchant_id, deposit_id, language)


async def deposit_detail(
    ctx: AppContext,
    merchant_id: str,
    deposit_id: str,
    language: str,
    *,
    external_id: str | None = None,
) -> DepositDetail:
    """The merchant's deposit (with ``external_id``: only that user's, else ``NotFound``)."""
    found = await queries.get_deposit(ctx.db, merchant_id, deposit_id)
    if external_id is not None and found.deposit.user_external_id != external_id:
        raise NotFound(f"no deposit {deposit_id}")
    deposit = DepositOut.of(found.deposit, ctx.assets[found.deposit.asset], language)
    return DepositDetail(
        **deposit.model_dump(),
        transitions=[Transition.of(t, language) for t in found.transitions],
    )


NOT_HELD: dict[int | str, dict[str, Any]] = {
    409: {"description": "the deposit is not held (already decided, or never was)"}
}
DepositIdPath = Annotated[str, Path(max_length=40)]


@router.post(
    "/deposits/{deposit_id}/approve",
    response_model=DepositOut,
    tags=["deposits"],
    summary="Credit a deposit held for review",
    responses=NOT_HELD,
)
async def approve_deposit(
    deposit_id: DepositIdPath, caller: Caller, ctx: Context, language: Language
) -> DepositOut:
    return await _review(ctx, caller, deposit_id, language, approve=True)


@router.post(
    "/deposits/{deposit_id}/reject",
    response_model=DepositOut,
    tags=["deposits"],
    summary="Reject a deposit held for review: it is never credited",
    responses=NOT_HELD,
)
async def reject_deposit(
    deposit_id: DepositIdPath, caller: Caller, ctx: Context, language: Language
) -> DepositOut:
    return await _review(ctx, caller, deposit_id, language, approve=False)


async def _review(
    ctx: AppContext, caller: KeyHolder, deposit_id: str, language: str, *, approve: bool
) -> DepositOut:
    decided = await reviews.review_deposit(
        ctx.db, ctx.assets, caller.merchant_id, deposit_id, approve=approve, actor=caller.actor
    )
    return DepositOut.of(decided, ctx.assets[decided.asset], language)


@router.post(
    "/observations",
    response_model=ObservationOut,
    tags=["deposits"],
    summary="Report a deposit your own payment system saw",
)
async def post_observation(
    body: ObservationIn, merchant_id: MerchantId, ctx: Context, language: Language
) -> ObservationOut:
    asset = ctx.assets[body.asset]
    observation = Observation(
        ref=ProviderRef(merchant_id, body.provider, body.provider_deposit_id),
        owner=ToUser(merchant_id, body.user),
        asset=asset.code,
        amount=parse_amount(body.amount, asset.decimals),
        provider_status=body.status,
        confirmations=body.confirmations,
    )
    recorded = await ctx.recorder.record(observation)
    assert recorded.deposit is not None or not recorded.changed
    return ObservationOut(
        deposit=None
        if recorded.deposit is None
        else DepositOut.of(recorded.deposit, asset, language),
        changed=recorded.changed,
        seq=recorded.seq,
    )


@router.get(
    "/transactions",
    response_model=TransactionPage,
    tags=["balances"],
    summary="Ledger records of your users, newest first",
)
async def list_transactions(
    merchant_id: MerchantId,
    ctx: Context,
    user: Annotated[str | None, Query(pattern=EXTERNAL_ID, description="external_id")] = None,
    asset: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> TransactionPage:
    return await transactions_page(ctx, merchant_id, user, asset, cursor, limit)


async def transactions_page(
    ctx: AppContext,
    merchant_id: str,
    user: str | None,
    asset: str | None,
    cursor: str | None,
    limit: int,
) -> TransactionPage:
    _require_known(ctx, asset)
    page = await queries.transaction_records(ctx.db, merchant_id, user, asset, cursor, limit)
    out = []
    for record in page.items:
        decimals = ctx.assets[record.asset].decimals
        out.append(
            TransactionOut(
                id=record.id,
                user={"id": record.user_id, "external_id": record.external_id},
                asset=record.asset,
                side=record.side,
                kind=record.kind,
                amount=format_amount(record.amount, decimals),
                amount_base_units=str(record.amount),
                deposit_id=record.deposit_id,
                created_at=record.created_at,
            )
        )
    return TransactionPage(data=out, next_cursor=page.next_cursor)


@router.get(
    "/events",
    response_model=EventPage,
    tags=["events"],
    summary="Your events in seq order, after a cursor",
)
async def list_events(
    merchant_id: MerchantId,
    ctx: Context,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Limit = 100,
) -> EventPage:
    events = await queries.events_after(ctx.db, merchant_id, after, limit)
    return EventPage(
        data=[EventOut(**event.envelope()) for event in events],
        next_after=events[-1].seq if events else after,
    )


OrderId = Annotated[str, Path(max_length=40, description="the order's id (ord_…)")]


@router.post(
    "/deposit-orders",
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: problem_responses(409)[409]},
    tags=["deposit orders"],
    summary="Ask a user to pay an asset (optionally an exact amount) before a deadline",
)
async def create_deposit_order(
    body: OrderIn, merchant_id: MerchantId, ctx: Context, language: Language
) -> OrderOut:
    return await new_order(ctx, merchant_id, body.user, body, language)


async def new_order(
    ctx: AppContext, merchant_id: str, external_id: str, body: OrderTerms, language: str
) -> OrderOut:
    asset = ctx.assets[body.asset]
    amount = None if body.amount is None else parse_amount(body.amount, asset.decimals)
    detail = await orders.create_order(
        ctx.db,
        ctx.chain_ids,
        ctx.assets,
        merchant_id,
        external_id,
        asset.code,
        amount,
        timedelta(seconds=body.expires_in_seconds),
        method=body.method,
        gateways=ctx.payments,
    )
    return OrderOut.of(detail, asset, language, status_url_of(ctx, detail.order.id))


@router.get(
    "/deposit-orders/{order_id}",
    response_model=OrderOut,
    tags=["deposit orders"],
    summary="An order with its progress and the deposits attributed to it",
)
async def get_deposit_order(
    order_id: OrderId, merchant_id: MerchantId, ctx: Context, language: Language
) -> OrderOut:
    return await order_of(ctx, merchant_id, order_id, language)


async def order_of(
    ctx: AppContext,
    merchant_id: str,
    order_id: str,
    language: str,
    *,
    external_id: str | None = None,
) -> OrderOut:
    """The merchant's order (with ``external_id``: only that user's, else ``NotFound``)."""
    detail = await orders.get_order(ctx.db, ctx.chain_ids, ctx.assets, merchant_id, order_id)
    if external_id is not None and detail.order.user_external_id != external_id:
        raise NotFound(f"no deposit order {order_id}")
    return OrderOut.of(
        detail, ctx.assets[detail.order.asset], language, status_url_of(ctx, order_id)
    )


def status_url_of(ctx: AppContext, order_id: str) -> str | None:
    """The order's status page link, when the dashboard has a key to sign it with."""
    return None if ctx.status_links is None else ctx.status_links.url(order_id)


@router.get(
    "/deposit-orders/{order_id}/qr.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}, "description": "The QR code"}},
    tags=["deposit orders"],
    summary="The order's payment URI as a QR code (SVG)",
)
async def get_deposit_order_qr(
    order_id: OrderId, merchant_id: MerchantId, ctx: Context
) -> Response:
    detail = await orders.get_order(ctx.db, ctx.chain_ids, ctx.assets, merchant_id, order_id)
    if detail.payment_uri is None:
        raise NotFound(f"{order_id} is paid through a payment provider; it has no QR code")
    return Response(qr_svg(detail.payment_uri), media_type="image/svg+xml")


def _require_known(ctx: AppContext, asset: str | None) -> None:
    """Filtering by an asset we do not handle is a mistake worth a 422, not an empty list."""
    if asset is not None:
        _ = ctx.assets[asset]  # raises UnknownAsset, naming the assets we do handle
