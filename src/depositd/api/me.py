"""/v1/me: a logged-in end user's own account, balances, deposits, records, orders and KYC.

Every route answers for the session's user only, by construction: the merchant and the user
come from the session, never from the request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, status
from fastapi.responses import JSONResponse

from depositd.api.deps import Context, EndUser, Language
from depositd.api.end_user_schemas import KycIn, KycStatusOut, KycSubmissionOut, MeOut
from depositd.api.problems import Problem
from depositd.api.routes import (
    Cursor,
    DepositIdPath,
    Limit,
    OrderId,
    balances_of,
    deposit_detail,
    deposits_page,
    new_order,
    order_of,
    transactions_page,
)
from depositd.api.schemas import (
    BalancesOut,
    DepositDetail,
    DepositPage,
    OrderOut,
    OrderTerms,
    TransactionPage,
    problem_responses,
)
from depositd.db.repositories import DepositFilter
from depositd.domain.deposits import DepositStatus
from depositd.services.kyc import KycNotConfigured

router = APIRouter(
    prefix="/v1/me",
    tags=["end users"],
    responses=problem_responses(400, 401, 404, 413, 422),
)


@router.get("", response_model=MeOut, summary="The logged-in end user's account")
async def me(account: EndUser) -> MeOut:
    return MeOut.of(account)


@router.get("/balances", response_model=BalancesOut, summary="My balances")
async def my_balances(account: EndUser, ctx: Context) -> BalancesOut:
    return await balances_of(ctx, account.merchant_id, account.id)


@router.get("/deposits", response_model=DepositPage, summary="My deposits, newest first")
async def my_deposits(
    account: EndUser,
    ctx: Context,
    language: Language,
    status_: Annotated[DepositStatus | None, Query(alias="status")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DepositPage:
    where = DepositFilter(
        merchant_id=account.merchant_id,
        external_id=account.id,
        status=status_.value if status_ else None,
    )
    return await deposits_page(ctx, where, cursor, limit, language)


@router.get("/deposits/{deposit_id}", response_model=DepositDetail, summary="One of my deposits")
async def my_deposit(
    deposit_id: DepositIdPath, account: EndUser, ctx: Context, language: Language
) -> DepositDetail:
    return await deposit_detail(
        ctx, account.merchant_id, deposit_id, language, external_id=account.id
    )


@router.get("/transactions", response_model=TransactionPage, summary="My ledger records")
async def my_transactions(
    account: EndUser,
    ctx: Context,
    asset: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> TransactionPage:
    return await transactions_page(ctx, account.merchant_id, account.id, asset, cursor, limit)


@router.post(
    "/deposit-orders",
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    summary="Start a deposit: an address to pay to, or a card or bank transfer payment",
)
async def my_new_order(
    body: OrderTerms, account: EndUser, ctx: Context, language: Language
) -> OrderOut:
    return await new_order(ctx, account.merchant_id, account.id, body, language)


@router.get("/deposit-orders/{order_id}", response_model=OrderOut, summary="One of my orders")
async def my_order(
    order_id: OrderId, account: EndUser, ctx: Context, language: Language
) -> OrderOut:
    return await order_of(ctx, account.merchant_id, order_id, language, external_id=account.id)


@router.get("/kyc", response_model=KycStatusOut, summary="My KYC level and submissions")
async def my_kyc(account: EndUser, ctx: Context) -> KycStatusOut:
    found = await ctx.kyc.of_account(account)
    return KycStatusOut(
        kyc_level=account.kyc_level, submissions=[KycSubmissionOut.of(s) for s in found]
    )


@router.post(
    "/kyc",
    response_model=KycSubmissionOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409, 503),
    summary="Submit personal details for a KYC level (stored encrypted)",
)
async def submit_kyc(body: KycIn, account: EndUser, ctx: Context) -> KycSubmissionOut:
    fields = body.model_dump(mode="json", exclude={"level"}, exclude_none=True)
    return KycSubmissionOut.of(await ctx.kyc.submit(account, body.level, fields))


def _not_configured(request: Request, exc: Exception) -> JSONResponse:
    return Problem(503, "kyc-not-configured", "KYC is not available", str(exc)).response(request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(KycNotConfigured, _not_configured)
