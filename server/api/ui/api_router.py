"""GET /ui: the demo page (ask, stream, sources, 👍/👎, correction), served from the package.

Three fixed files and nothing else: no directory listing, no path from the request reaches
the file system, and a strict Content-Security-Policy keeps the page to this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

STATIC = Path(__file__).parent / "static"
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["ui"], include_in_schema=False)


def _file(name: str) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=_FILES[name], headers=_HEADERS)


@router.get("/ui")
async def page() -> Response:
    """The demo page."""
    return _file("index.html")


@router.get("/ui/app.js")
async def script() -> Response:
    return _file("app.js")


@router.get("/ui/app.css")
async def style() -> Response:
    return _file("app.css")


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
