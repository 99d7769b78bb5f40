"""The web app of ``kestrel label``: a Starlette app over a :class:`LabelStore`.

API (JSON; the page in ``static/`` uses nothing else):

* ``GET /api/images`` — ``{"version", "classes", "images": [{"path", "label", "guess",
  "cluster", "flags", "rank", "suggested_label"}], "clusters": [{"id", "size", "guess"}],
  "history": [{"id", "label", "count"}]}``; clusters and flags come from the curate report
  (an image moved by ``label`` keeps its own).
* ``POST /api/label {"paths": [...], "label": "name"}`` — moves the images into the class
  folder; ``{"id", "moved"}``. ``POST /api/undo {"id"?: n}`` — reverses change ``n`` (default:
  the latest). Bad paths or names: 400; images no longer where the page saw them, or an undo
  that other changes block: 409 with ``{"error", "paths"}``.
* ``GET /api/thumb?path=...``, ``GET /api/image?path=...`` — the pictures; ``GET
  /api/version`` — ``{"version"}``, polled so that two tabs see each other's work.

Security: with a token every request needs it (``Authorization: Bearer``, the
``kestrel_token`` cookie that ``/?token=`` sets, or ``?token=``); POSTs must be JSON (a
cross-site form cannot send that without a CORS preflight, which is never granted); on a
loopback address only loopback ``Host`` headers are accepted (DNS rebinding).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from device.inference.preprocess import ImageError
from training.label.store import LabelStore, Refused, Stale

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
COOKIE = "kestrel_token"
THUMB_SIDE = 160


def image_rows(store: LabelStore, report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every image in the folder with what the curate report says about it."""
    info = {i["path"]: i for i in report["images"]} if report else {}
    rank = {}
    for cluster in report["clusters"] if report else []:
        for position, member in enumerate(cluster["members"]):
            rank[member] = position
    origin: dict[str, str] = {}  # where label moved an image from, back to the report's path
    for record in store.history():
        for src, dst in record["moves"]:
            origin[dst] = origin.pop(src, src)
    rows = []
    for entry in store.images():
        first = origin.get(entry.path, entry.path)
        meta = info.get(first, {})
        rows.append(
            {
                "path": entry.path,
                "label": entry.label,
                "guess": entry.guess or meta.get("guess"),
                "cluster": meta.get("cluster"),
                "flags": [f for f in meta.get("flags", []) if f != "label_error" or entry.label],
                "rank": rank.get(first),
                "suggested_label": meta.get("suggested_label"),
            }
        )
    return rows


def images_payload(store: LabelStore, report: dict[str, Any] | None) -> dict[str, Any]:
    """The answer of ``GET /api/images``."""
    history = [
        {"id": r["id"], "label": r["label"], "count": len(r["moves"])} for r in store.history()
    ]
    clusters = [
        {"id": c["id"], "size": c["size"], "guess": c.get("guess")}
        for c in (report["clusters"] if report else [])
    ]
    return {
        "root": str(store.root),
        "version": store.version(),
        "classes": store.classes(),
        "images": image_rows(store, report),
        "clusters": clusters,
        "history": history,
    }


def create_app(
    root: Path,
    report: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    loopback: bool = True,
) -> Starlette:
    """The app for folder ``root``; ``report`` is the curate report (None: no groups)."""
    store = LabelStore(root)

    async def images(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(images_payload, store, report))

    async def version(request: Request) -> Response:
        return JSONResponse({"version": store.version()})

    async def label(request: Request) -> Response:
        body = await _json_body(request)
        paths, name = body.get("paths"), body.get("label")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise Refused('"paths" must be a list of paths')
        result = await run_in_threadpool(store.label, paths, name)
        return JSONResponse({**result, "version": store.version()})

    async def undo(request: Request) -> Response:
        body = await _json_body(request)
        change = body.get("id")
        if change is not None and not isinstance(change, int):
            raise Refused('"id" must be a number')
        result = await run_in_threadpool(store.undo, change)
        return JSONResponse({**result, "version": store.version()})

    async def thumb(request: Request) -> Response:
        from training.curate.html import thumbnail_jpeg

        path = _existing(store, request.query_params.get("path", ""))
        data = await run_in_threadpool(thumbnail_jpeg, path, THUMB_SIDE)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    async def image(request: Request) -> Response:
        return FileResponse(_existing(store, request.query_params.get("path", "")))

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
        given = request.query_params.get("token")
        if token and given:  # already checked by the middleware
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return response

    routes = [
        Route("/", index),
        Route("/api/images", images),
        Route("/api/version", version),
        Route("/api/label", label, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/thumb", thumb),
        Route("/api/image", image),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(_Guard, token=token)]
    if loopback:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    handlers = {Refused: _refused, Stale: _stale, FileNotFoundError: _missing, ImageError: _bad}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


def _existing(store: LabelStore, rel: str) -> Path:
    path = store.resolve(rel)
    if path is None:
        raise FileNotFoundError(rel)
    return path


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise Refused("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused("the request body must be a JSON object")
    return body


async def _refused(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _stale(request: Request, exc: Exception) -> Response:
    paths = exc.paths if isinstance(exc, Stale) else []
    return JSONResponse({"error": str(exc), "paths": paths}, status_code=409)


async def _bad(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=422)


async def _missing(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"{exc}: no such image (moved?)"}, status_code=404)


class _Guard:
    """The token (when set) on every request, and JSON-only POSTs."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.token and not self._authorized(request):
            await JSONResponse({"error": "a token is required"}, status_code=401)(
                scope, receive, send
            )
            return
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if request.method == "POST" and kind != "application/json":
            await JSONResponse({"error": "POST bodies must be application/json"}, status_code=415)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        header = request.headers.get("authorization", "")
        given = [
            header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else "",
            request.cookies.get(COOKIE, ""),
            request.query_params.get("token", ""),
        ]
        return any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given)
