"""Path and query values exactly as the client sent them, refused where the framework
would silently change their meaning.

Starlette decodes percent-encoded bytes with ``errors="replace"``, so ``%ff``, ``%fe`` and
``%C0%AF`` all become U+FFFD and name one key; and of a repeated query parameter only one
value reaches the route, so ``?dry_run=true&dry_run=false`` would write for real. These
checks read the raw request (``scope["raw_path"]`` and ``scope["query_string"]``) before
any route sees it.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import unquote_to_bytes

from fastapi import Request

from .auth import CurrentPrincipal
from .problems import ApiProblem

__all__ = ["well_formed"]

_NOT_UTF8 = "is not valid UTF-8 once percent-decoded"
_NUL = "contains a NUL character, which no key or reason can hold"


def _decoded(raw: bytes) -> str | None:
    """``raw`` percent-decoded as UTF-8, or ``None`` when it is not UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _path_errors(request: Request) -> list[dict[str, str]]:
    raw_path: bytes = request.scope.get("raw_path") or b""
    errors = []
    for segment in raw_path.split(b"/"):
        if _decoded(segment) is not None:
            continue
        shown = unquote_to_bytes(segment).decode("utf-8", "replace")
        names = [n for n, v in request.path_params.items() if v == shown] or ["path"]
        errors.append({"path": names[0], "in": "path", "message": _NOT_UTF8})
    return errors


def _query_errors(request: Request) -> tuple[int, list[dict[str, str]]]:
    """(status, errors): 400 for what cannot be read unambiguously, else 422."""
    malformed, refused = [], []
    names: list[str] = []
    query: bytes = request.scope.get("query_string") or b""
    for part in query.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name, value = (_decoded(s.replace(b"+", b" ")) for s in (raw_name, raw_value))
        if name is None:
            shown = unquote_to_bytes(raw_name).decode("utf-8", "replace")
            malformed.append({"path": shown, "in": "query", "message": f"(the name) {_NOT_UTF8}"})
            continue
        names.append(name)
        if value is None:
            malformed.append({"path": name, "in": "query", "message": _NOT_UTF8})
        elif "\x00" in value:
            refused.append({"path": name, "in": "query", "message": _NUL})
    for name, count in Counter(names).items():
        if count > 1:
            message = f"is given {count} times; give it once"
            malformed.append({"path": name, "in": "query", "message": message})
    return (400, malformed) if malformed else (422, refused)


async def well_formed(request: Request, _: CurrentPrincipal) -> None:
    """Refuse a request whose path or query the framework would rewrite or half-read.

    Depends on the principal so that a caller without a token still gets 401 first.

    Raises:
        ApiProblem: 400 for invalid UTF-8 in the path or query, or a repeated query
            parameter (none of these routes takes a list); 422 for a NUL character in
            a query value. ``errors`` names each parameter.
    """
    path_errors = _path_errors(request)
    status, query_errors = _query_errors(request)
    errors = path_errors + query_errors
    if errors:
        detail = "; ".join(f"{e['in']} parameter {e['path']!r} {e['message']}" for e in errors)
        raise ApiProblem(400 if path_errors else status, detail, errors=errors)
