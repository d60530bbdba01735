"""HTTP answers for errors: the app's specific errors to 404 / 409 / 422, validation errors to one clear 422.

Every error body is ``{"detail": "one line: what was expected, what was got"}`` (validation errors add
``"errors": [{"loc", "msg"}]``, one per mistake); credentials in messages are masked; the input is never echoed
(a URI with a password would be).
"""
from __future__ import annotations

import difflib
import logging
from typing import Any, Dict, List, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edge_detect.errors import ConfigError, DuplicateSourceError, SourceError, UnknownSourceError
from edge_detect.server.models import SourceIn, SourcePatch
from edge_detect.urls import mask_credentials

__all__ = ["install_error_handlers", "STATUS_OF"]

LOGGER = logging.getLogger(__name__)

#: the app's errors and the HTTP status they answer with (the most specific class first)
STATUS_OF = ((UnknownSourceError, 404), (DuplicateSourceError, 409), (ConfigError, 422), (SourceError, 422))
_FIELDS = {"POST": sorted(SourceIn.model_fields), "PATCH": sorted(SourcePatch.model_fields)}


def install_error_handlers(api: FastAPI) -> None:
    """Register the handlers on ``api``."""
    api.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    for exc_type, _ in STATUS_OF:
        api.add_exception_handler(exc_type, _app_error)  # type: ignore[arg-type]


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    status = next(code for exc_type, code in STATUS_OF if isinstance(exc, exc_type))
    message = mask_credentials(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return JSONResponse({"detail": message}, status_code=status)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = _FIELDS.get(request.method, [])
    errors = [_one(err, fields) for err in exc.errors()]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _one(err: Dict[str, Any], fields: Sequence[str]) -> Dict[str, str]:
    loc: Sequence[Any] = err.get("loc", ())
    if loc and loc[0] in ("body", "query", "path"):
        where, loc = str(loc[0]), loc[1:]
    else:
        where = "body"
    path = ".".join(str(p) for p in loc)
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden" and loc:
        msg = f"unknown key {loc[-1]!r}{_suggest(str(loc[-1]), fields)}; expected one of {', '.join(fields)}"
    elif err.get("type") == "json_invalid":
        path = ""
        msg = f"expected a JSON body, got invalid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
    elif err.get("type") == "missing":
        msg = "required: expected a value, got none"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return {"loc": f"{where}.{path}" if path else where, "msg": mask_credentials(msg)}


def _suggest(key: str, fields: Sequence[str]) -> str:
    close: List[str] = difflib.get_close_matches(key, list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
