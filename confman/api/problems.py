"""Errors as RFC 9457 problem details, and the mapping from confman's exceptions.

Every error the API answers has the same shape, so a client (or the dashboard) reads
``errors[].path`` to put a message next to the field it concerns. Messages come from
confman's exceptions, which never carry a refused value or a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from confman import (
    ConcurrencyConflict,
    ConfmanError,
    NotFound,
    SchemaOutOfDate,
    SecretsUnavailable,
    StoreUnavailable,
    ValidationFailed,
)
from confman.environments import EnvironmentNotEmpty, UnknownEnvironment

__all__ = ["PROBLEM_JSON", "ApiProblem", "install_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"


class ApiProblem(Exception):
    """Raise in a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    errors: Iterable[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    found = list(errors)
    if found:
        body["errors"] = found
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _nothing(_namespace: str) -> bool:
    return False


def _validation_failed(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, ValidationFailed)
    # A rule across managers may speak of namespaces the caller's token does not grant
    # (a router editor asking about providers): those parts are told in neutral words.
    who = getattr(request.state, "principal", None)
    e = e.seen_by(_nothing if who is None else who.sees)
    extra: dict[str, Any] = {}
    if e.environment is not None:
        extra["environment"] = e.environment  # the overlay a base write would break
    return problem_response(
        422,
        str(e),
        errors=[{"path": f.path, "message": f.message} for f in e.errors],
        source=e.source,
        **extra,
    )


def _unknown_environment(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, UnknownEnvironment)
    # A token limited to environments is told only of those it may use.
    who = getattr(request.state, "principal", None)
    known = [n for n in e.known if who is None or who.reaches(n)]
    listed = ", ".join(known) or "none"
    detail = f"unknown environment {e.name!r}; known: {listed} (or base)"
    return problem_response(404, detail, environment=e.name, known=known)


def _not_empty(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, EnvironmentNotEmpty)
    return problem_response(409, str(e), environment=e.name, documents=e.documents)


def _conflict(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, ConcurrencyConflict)
    return problem_response(
        412,
        str(e),
        headers={"ETag": f'"{e.current_version}"'},
        current_version=e.current_version,
    )


def _confman_error(_: Request, e: Exception) -> JSONResponse:
    status = 500
    if isinstance(e, NotFound):
        status = 404
    elif isinstance(e, StoreUnavailable | SchemaOutOfDate | SecretsUnavailable):
        status = 503
    return problem_response(status, str(e))


def _api_problem(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, ApiProblem)
    return problem_response(e.status, e.detail, headers=e.headers, **e.extra)


def _request_invalid(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    errors = []
    for error in e.errors():
        where, *path = [str(p) for p in error.get("loc", ())]
        errors.append({"path": ".".join(path), "message": str(error.get("msg", "invalid"))})
        errors[-1]["in"] = where
    return problem_response(422, "the request is invalid", errors=errors)


def _http_error(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, StarletteHTTPException)
    return problem_response(e.status_code, str(e.detail), headers=e.headers)


def _unexpected(_: Request, e: Exception) -> JSONResponse:
    # Logged with its traceback by the server; the client gets no internals.
    return problem_response(500, f"unexpected {type(e).__name__}; see the server's log")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(ValidationFailed, _validation_failed)
    app.add_exception_handler(ConcurrencyConflict, _conflict)
    app.add_exception_handler(UnknownEnvironment, _unknown_environment)
    app.add_exception_handler(EnvironmentNotEmpty, _not_empty)
    app.add_exception_handler(ConfmanError, _confman_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
