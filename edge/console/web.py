"""The console's static single-page app at `/console/`: HTML, CSS and ES modules, no build.

Files are the package's `static/` directory, listed once at start; only those paths are
served (nothing is resolved from the request path). Every response carries a strict Content
Security Policy (scripts and connections only to this origin, no framing): the page holds a
session token and a terminal, so no injected script or frame may reach them.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
}


def _content_type(path: Path) -> str:
    return (
        _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def security_headers(request: web.Request) -> dict[str, str]:
    host = request.host
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; "
            # xterm.js sizes its rows with a <style> element it adds at run time
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
            f"connect-src 'self' wss://{host}; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


class ConsolePages:
    def __init__(self, directory: Path = STATIC) -> None:
        self.directory = directory
        self.files = {
            p.relative_to(directory).as_posix(): p
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/console", self.redirect),
            web.get("/console/", self.index),
            web.get("/console/{path:.+}", self.file),
        ]

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/console/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, "index.html", cache="no-store")

    async def file(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, request.match_info["path"], cache="no-cache")

    def _serve(self, request: web.Request, name: str, cache: str) -> web.StreamResponse:
        path = self.files.get(name)
        if path is None:
            raise web.HTTPNotFound(text=f"no console file {name}\n")
        headers = security_headers(request)
        headers["Cache-Control"] = cache
        return web.Response(
            body=path.read_bytes(),
            content_type=_content_type(path),
            charset="utf-8" if not _content_type(path).startswith("image/") else None,
            headers=headers,
        )
