"""``GET /ui`` and ``GET /ui/{file}``: the console's static files, or 404 when
``server.console`` is off.

Every answer carries a strict Content-Security-Policy: scripts and styles only from these files
(no inline script, no ``eval``), fetches only to this origin, no framing. Model output is put
into the page as text by the scripts themselves; the policy is the second wall, should a bug
ever let markup through. No cookies are set or read: the key travels in ``Authorization``, so
there is no cross-site request to forge.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from server.api.deps import RuntimeDep
from server.errors import NotFound

STATIC = Path(__file__).parent / "static"

# Only these kinds are served, each with its type spelled out (never guessed from the system).
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # The files change with Puente's version; revalidating is cheap and avoids a stale console.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _enabled(runtime: RuntimeDep) -> None:
    if not runtime.settings.config.server.console:
        raise NotFound("The web console is off (server.console: false).")


@router.get("/ui")
async def console_root(runtime: RuntimeDep) -> Response:
    _enabled(runtime)
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/{name:path}")
async def console_file(name: str, request: Request, runtime: RuntimeDep) -> Response:
    _enabled(runtime)
    path = static_file(name or "index.html")
    if path is None:
        raise NotFound(f"No route for GET {request.url.path}.")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)


def static_file(name: str) -> Path | None:
    """The file under ``static/`` that ``name`` names, or None: no way out of the folder, no
    hidden files, only the kinds in ``_TYPES``."""
    if any(part.startswith(".") or part == "" for part in name.split("/")):
        return None
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or path.suffix not in _TYPES:
        return None
    return path if path.is_file() else None
