"""Operator sign-in for the dashboard: the session cookie, CSRF tokens, login and logout.

The cookie holds a random session id and its MAC under the dashboard key (HttpOnly,
SameSite=Strict, Secure over HTTPS, path ``/dashboard``); the database knows the session by
the id's SHA-256 only, so neither a stolen database nor a forged cookie signs anyone in.
Every form that changes something carries the session's CSRF token (the session id's MAC
for another purpose) in a hidden field, checked before anything is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from depositd.api.deps import AppContext
from depositd.api.throttle import retry_after
from depositd.dashboard.rendering import guard, page
from depositd.db.operators import Operator
from depositd.services import operators
from depositd.services.callbacks import client_address
from depositd.signer import Signer

SESSION_COOKIE = "depositd_session"
COOKIE_PATH = "/dashboard"

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@dataclass(frozen=True)
class SignedIn:
    operator: Operator
    session_id: str
    #: the token every form of this session sends back
    csrf: str


class LoginRequired(Exception):
    """No live session: pages redirect to the login form, the JSON views answer 401."""


class DashboardOff(Exception):
    """No dashboard key is configured."""


class CsrfRefused(Exception):
    """A form without this session's CSRF token."""


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def signer_of(request: Request) -> Signer:
    links = context(request).status_links
    if links is None:
        raise DashboardOff()
    return links.signer


async def signed_in(request: Request) -> SignedIn:
    """The operator of this request's session cookie, or ``LoginRequired``."""
    signer = signer_of(request)
    session_id, _, mac = request.cookies.get(SESSION_COOKIE, "").partition(".")
    if not session_id or not signer.verify("session", session_id, mac):
        raise LoginRequired()
    operator = await operators.session_operator(context(request).db, session_id)
    if operator is None:
        raise LoginRequired()
    return SignedIn(operator, session_id, signer.sign("csrf", session_id))


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each)."""
    fields = parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


async def checked_form(request: Request, session: SignedIn) -> dict[str, str]:
    """The form, once its CSRF token is this session's (``CsrfRefused`` otherwise)."""
    fields = await form(request)
    if not Signer.same(fields.get("csrf", ""), session.csrf):
        raise CsrfRefused()
    return fields


def _safe_next(target: str | None) -> str:
    """Only our own dashboard pages are followed after login (no open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


@router.get("/login")
async def login_form(request: Request) -> Response:
    signer_of(request)
    return page(request, "login.html", next=_safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    signer = signer_of(request)
    ctx = context(request)
    fields = await form(request)
    target = _safe_next(fields.get("next"))
    peer = request.client.host if request.client else "unknown"
    source = client_address(
        peer, {"x-forwarded-for": request.headers.get("x-forwarded-for", "")}, ctx.trusted_proxies
    )
    wait = ctx.auth_throttle.allow(source)
    if wait is not None:
        response = page(request, "login.html", 429, next=target, error="too_many_logins")
        response.headers["retry-after"] = retry_after(wait)
        return response
    try:
        session = await operators.login(
            ctx.db,
            fields.get("email", ""),
            fields.get("password", ""),
            session_hours=request.app.state.dashboard_session_hours,
        )
    except operators.LoginRefused:
        return page(request, "login.html", 401, next=target, error="wrong_login",
                    email=fields.get("email", ""))  # fmt: skip
    redirect = RedirectResponse(target, 303)
    redirect.set_cookie(
        SESSION_COOKIE,
        f"{session.token}.{signer.sign('session', session.token)}",
        max_age=int(request.app.state.dashboard_session_hours * 3600),
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return guard(redirect)


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await signed_in(request)
    await checked_form(request, session)
    await operators.logout(context(request).db, session.session_id)
    response = RedirectResponse("/dashboard/login", 303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return guard(response)


def _login_required(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/dashboard/api/"):
        return JSONResponse({"error": "log in again"}, 401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return guard(RedirectResponse(f"/dashboard/login?next={quote(target, safe='')}", 303))


def _dashboard_off(request: Request, exc: Exception) -> Response:
    return page(request, "message.html", 503, message="dashboard_off")


def _csrf_refused(request: Request, exc: Exception) -> Response:
    return guard(Response("CSRF token missing or wrong: reload the page.", 403))


def install(app: FastAPI, session_hours: float) -> None:
    app.state.dashboard_session_hours = session_hours
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(DashboardOff, _dashboard_off)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
