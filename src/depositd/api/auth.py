"""End users' own sign-up and login: /v1/auth/*, rate limited per source address.

Registration and asking for a verification email answer 202 whether or not the address
has an account (the owner of the address learns the rest by email), so these routes do not
reveal who is registered.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response, status
from fastapi.responses import JSONResponse

from depositd.api.deps import Context, bearer_token, throttled
from depositd.api.end_user_schemas import (
    EmailSentOut,
    LoginIn,
    MeOut,
    RegisterIn,
    ResendIn,
    SessionOut,
    VerifyIn,
)
from depositd.api.problems import Problem
from depositd.api.schemas import problem_responses
from depositd.api.throttle import retry_after
from depositd.services.end_users import AccountLocked, EmailNotVerified, LoginRefused

router = APIRouter(
    prefix="/v1/auth",
    tags=["end-user auth"],
    dependencies=[Depends(throttled)],
    responses=problem_responses(400, 413, 422, 429),
)

SENT = "if the address can be verified, an email with a token is on its way"


@router.post(
    "/register",
    response_model=EmailSentOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Sign up with email and password; a verification token is emailed",
)
async def register(body: RegisterIn, ctx: Context) -> EmailSentOut:
    address = await ctx.end_users.register(body.merchant, body.email, body.password)
    return EmailSentOut(email=address, detail=SENT)


@router.post(
    "/resend-verification",
    response_model=EmailSentOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Email a new verification token to an unverified account",
)
async def resend_verification(body: ResendIn, ctx: Context) -> EmailSentOut:
    address = await ctx.end_users.resend_verification(body.merchant, body.email)
    return EmailSentOut(email=address, detail=SENT)


@router.post(
    "/verify-email",
    response_model=MeOut,
    summary="Verify the email address with the emailed token (once)",
)
async def verify_email(body: VerifyIn, ctx: Context) -> MeOut:
    return MeOut.of(await ctx.end_users.verify_email(body.token))


@router.post(
    "/login",
    response_model=SessionOut,
    responses=problem_responses(401, 403),
    summary="A session token for /v1/me (the email must be verified)",
)
async def login(body: LoginIn, ctx: Context) -> SessionOut:
    session = await ctx.end_users.login(body.merchant, body.email, body.password)
    return SessionOut(token=session.token, expires_at=session.expires_at)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End the session whose token is sent",
)
async def logout(ctx: Context, authorization: Annotated[str | None, Header()] = None) -> Response:
    token = bearer_token(authorization)
    if token is not None:
        await ctx.end_users.logout(token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LoginRefused)
    if isinstance(exc, AccountLocked):
        wait = retry_after(exc.retry_after.total_seconds())
        problem = Problem(429, exc.slug, "Account locked", str(exc), headers={"Retry-After": wait})
    elif isinstance(exc, EmailNotVerified):
        problem = Problem(403, exc.slug, "Email not verified", str(exc))
    else:
        problem = Problem(401, exc.slug, "Login failed", str(exc))
    return problem.response(request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoginRefused, _refused)
