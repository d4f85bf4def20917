"""Errors as RFC 9457 problem+json, each with a sentence a person understands."""

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vpool.model.errors import VpoolError

MEDIA = "application/problem+json"


def problem(status: int, title: str, detail: str, instance: str | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def _sentence(err: dict) -> str:
    """Pydantic's words, said of the field; a body that is not JSON, or is missing, said plainly."""
    if err["type"] == "json_invalid":
        why = (err.get("ctx") or {}).get("error", "decode error")
        return f"the request body is not valid JSON ({why} at character {err['loc'][-1]})"
    if err["type"] == "missing" and tuple(err["loc"]) == ("body",):
        return "the request needs a JSON body"
    if err["type"] == "extra_forbidden":
        return f"{_field(err['loc'])} is not something this request takes (a misspelt field?)"
    return f"{_field(err['loc'])}: {err['msg']}"


def install(app) -> None:
    @app.exception_handler(VpoolError)
    async def vpool_error(request: Request, e: VpoolError):
        return problem(e.status, e.title, e.detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        sentences = [_sentence(err) for err in e.errors()]
        return problem(422, "Invalid request", "; ".join(sentences), request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        detail = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404 and detail == "Not Found":
            detail = f"there is no resource at {request.url.path}"
        return problem(e.status_code, detail if e.status_code != 404 else "Not found", detail, request.url.path)
