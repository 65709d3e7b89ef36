"""Rendering pages: the Jinja environment, the reader's language, security headers."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from depositd.dashboard.i18n import LANGUAGE_COOKIE, other_language, request_language, translator
from depositd.domain.money import format_amount

#: scripts and styles only from our own files; nothing may frame a page
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

_env = Environment(
    loader=PackageLoader("depositd.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(at: datetime | str | None) -> str:
    if at is None:
        return "—"
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.strftime("%Y-%m-%d %H:%M:%S")


_env.filters["when"] = _when
_env.filters["units"] = format_amount


def switch_url(request: Request, language: str) -> str:
    """This page's address with ``lang`` set to ``language``."""
    query = [(k, v) for k, v in parse_qsl(request.url.query) if k != "lang"]
    return f"{request.url.path}?{urlencode([*query, ('lang', language)])}"


def page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """``template`` rendered in the reader's language, with the language switch."""
    language, picked = request_language(request)
    html = _env.get_template(template).render(
        t=translator(language),
        lang=language,
        switch=switch_url(request, other_language(language)),
        **values,
    )
    response = HTMLResponse(html, status_code)
    guard(response)
    if picked:
        response.set_cookie(
            LANGUAGE_COOKIE, language, max_age=365 * 86400, samesite="lax", httponly=True
        )
    return response


def fragment(request: Request, template: str, **values: Any) -> str:
    """A piece of a page (rows a live view swaps in), in the reader's language."""
    language, _ = request_language(request)
    return _env.get_template(template).render(t=translator(language), lang=language, **values)


def guard(response: Response) -> Response:
    response.headers["content-security-policy"] = CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["cache-control"] = "no-store"
    return response
