"""RFC 9457 problem+json errors with stable ``type`` URIs, and the handlers that emit them."""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from depositd.errors import (
    Conflict,
    IllegalTransition,
    InputError,
    NotFound,
    UpstreamUnavailable,
)

log = structlog.get_logger("depositd.api")

PROBLEM_BASE = "urn:depositd:problem:"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answer: raise it from a router, or let a domain error map to one."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extra = extra

    def document(self, instance: str) -> dict[str, Any]:
        """The problem+json body, for the request to ``instance`` (its path)."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "instance": instance,
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body

    def response(self, request: Request) -> JSONResponse:
        return JSONResponse(
            self.document(request.url.path),
            status_code=self.status,
            headers=self.headers,
            media_type=MEDIA_TYPE,
        )


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Missing or invalid API key",
        detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return Problem(400, "malformed-json", "The request body is not valid JSON").response(
            request
        )
    fields = [
        {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in errors
    ]
    first = fields[0]
    return Problem(
        422,
        "validation-error",
        "The request does not match the schema",
        f"{first['field']}: {first['message']}",
        errors=fields,
    ).response(request)


def _input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return Problem(422, exc.slug, "The request cannot be accepted", str(exc)).response(request)


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return Problem(404, "not-found", "Not found", str(exc)).response(request)


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Conflict)
    return Problem(409, exc.slug, "Conflict", str(exc)).response(request)


def _upstream(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UpstreamUnavailable)
    return Problem(
        502, exc.slug, "A provider did not answer", str(exc), headers={"Retry-After": "5"}
    ).response(request)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    """A bug or an outage: log it with its traceback, answer without details."""
    log.error("unhandled error", path=request.url.path, exc_info=exc)
    return Problem(500, "internal-error", "Internal error").response(request)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slugs = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}
    slug = slugs.get(exc.status_code, f"http-{exc.status_code}")
    headers = dict(exc.headers or {})  # e.g. Allow on 405
    if exc.status_code == 405:
        # Starlette names only the methods of the first route matching the path; a path
        # served by several routes (GET and POST /v1/endpoints) takes all of them
        allowed = _methods_for(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return Problem(exc.status_code, slug, str(exc.detail), headers=headers).response(request)


def _methods_for(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for the request's path."""
    table = _path_table(request.app)
    return next((methods for pattern, methods in table if pattern.fullmatch(request.url.path)), [])


def _path_table(app: FastAPI) -> list[tuple[re.Pattern[str], list[str]]]:
    cached: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "path_table", None)
    if cached is None:
        cached = []
        for path, operations in app.openapi()["paths"].items():
            pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))
            cached.append((re.compile(pattern), sorted(method.upper() for method in operations)))
        app.state.path_table = cached
    return cached


def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response(request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InputError, _input)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(UpstreamUnavailable, _upstream)
    app.add_exception_handler(IllegalTransition, _internal)
    app.add_exception_handler(Exception, _internal)
    app.add_exception_handler(StarletteHTTPException, _http)
