"""Page: the static web page served at /ui/ without a token; it holds no data, and every call it makes
to the API carries the token the user types into it."""

from __future__ import annotations

from importlib import resources

from fastapi import HTTPException
from fastapi.responses import Response

# name under /ui/ -> (file in serve_deployments/ui/, content type); nothing else is served from there.
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
ROUTES = frozenset({"/ui", *(f"/ui/{name}" for name in FILES)})
HEADERS = {
    # Only the page's own script and style run; thumbnails are shown from blob: URLs.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_CONTENT = {name: resources.files(__package__).joinpath("ui", file).read_bytes() for name, (file, _) in FILES.items()}


def page_file(name: str) -> Response:
    if name not in FILES:
        raise HTTPException(404, f"no such file in the web page: {name}")
    return Response(_CONTENT[name], media_type=FILES[name][1], headers=HEADERS)
