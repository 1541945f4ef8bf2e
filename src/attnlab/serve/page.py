"""The web page of ``attnlab serve`` (``GET /``): ``static/index.html`` with its script and
style, plus the attention view's script and style from ``attnlab.inspect.html`` (the same
drawing code as ``attnlab attention --html``). Served from the package: no CDN, no build
step, nothing fetched from elsewhere. The page and its files need no API key; the page asks
for one when the API answers 401."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from attnlab.inspect.html import attention_script, attention_style

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _assets() -> dict[str, tuple[str, str]]:
    """name -> (text, content type) of every file the page loads."""
    files = {
        "page.js": (STATIC / "page.js").read_text(encoding="utf-8"),
        "page.css": (STATIC / "page.css").read_text(encoding="utf-8"),
        "attention.js": attention_script(),
        "attention.css": attention_style(),
    }
    return {name: (text, _TYPES[Path(name).suffix]) for name, text in files.items()}


def add_page_routes(app: FastAPI) -> None:
    """``GET /`` and ``GET /static/NAME``, read once when the app is made."""
    index = (STATIC / "index.html").read_text(encoding="utf-8")
    assets = _assets()

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index)

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in assets:
            return Response(f"no such file: /static/{name}\n", 404, media_type="text/plain")
        text, media_type = assets[name]
        return Response(text, media_type=media_type)
