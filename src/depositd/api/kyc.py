"""/v1/kyc-submissions: the merchant's operators review their end users' KYC submissions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from depositd.api.deps import Caller, Context, MerchantId
from depositd.api.end_user_schemas import KycApproveIn, KycPage, KycRejectIn, KycReviewOut
from depositd.api.routes import Cursor, Limit
from depositd.api.schemas import problem_responses
from depositd.services.queries import decode_cursor, encode_cursor

router = APIRouter(
    prefix="/v1/kyc-submissions",
    tags=["kyc review"],
    responses=problem_responses(400, 401, 404, 413, 422, 503),
)

SubmissionId = Annotated[str, Path(max_length=40, description="kyc_…")]


@router.get("", response_model=KycPage, summary="Submissions, newest first, fields opened")
async def list_submissions(
    merchant_id: MerchantId,
    ctx: Context,
    status: Annotated[Literal["pending", "approved", "rejected"] | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> KycPage:
    found = await ctx.kyc.page(merchant_id, status, decode_cursor("kyc", cursor), limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return KycPage(
        data=[KycReviewOut.of_review(r) for r in found],
        next_cursor=encode_cursor("kyc", found[-1].submission.id) if more else None,
    )


@router.get("/{submission_id}", response_model=KycReviewOut, summary="One submission")
async def get_submission(
    submission_id: SubmissionId, merchant_id: MerchantId, ctx: Context
) -> KycReviewOut:
    return KycReviewOut.of_review(await ctx.kyc.get(merchant_id, submission_id))


@router.post(
    "/{submission_id}/approve",
    response_model=KycReviewOut,
    responses=problem_responses(409),
    summary="Approve: the user is raised to the level granted",
)
async def approve_submission(
    submission_id: SubmissionId, body: KycApproveIn, caller: Caller, ctx: Context
) -> KycReviewOut:
    decided = await ctx.kyc.approve(
        caller.merchant_id, submission_id, body.level, actor=caller.actor
    )
    return KycReviewOut.of_review(decided)


@router.post(
    "/{submission_id}/reject",
    response_model=KycReviewOut,
    responses=problem_responses(409),
    summary="Reject with a reason the user sees",
)
async def reject_submission(
    submission_id: SubmissionId, body: KycRejectIn, caller: Caller, ctx: Context
) -> KycReviewOut:
    decided = await ctx.kyc.reject(
        caller.merchant_id, submission_id, body.reason, actor=caller.actor
    )
    return KycReviewOut.of_review(decided)
