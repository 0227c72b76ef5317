"""The HTTP layer of ``tools/serve.py``: a Starlette application over a :class:`PredictionService`, run by uvicorn.

Endpoints:

* ``POST /predict``: the image as multipart field ``image`` or as the raw request body. JSON with the image
  size, the checkpoint, timing and the instances (class id and name, score, box ``x1, y1, x2, y2``, mask as
  COCO compressed RLE; segmentation also the label map as one RLE per label present). Query ``format=png``
  answers the overlay picture instead; ``score_threshold=T`` keeps only detections scoring at least T.
* ``GET /``: the web page (``static/``: no external resource, so it works offline).
* ``GET /healthz``: ``{"status": "ok", ...}`` with the queue's state. ``GET /model``: the checkpoint's metadata.

Every refused request is a 4xx JSON ``{"error": message, "code": short_code}``: the body is counted while it
is read and cut off at the byte limit (413), so a huge upload is never held in memory. A full queue is 503
with ``Retry-After``.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .service import (DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, BadInput, PredictionService, QueueFull, ServiceStopped,
                      check_upload)

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Room for the multipart boundaries and headers around the image itself.
_MULTIPART_OVERHEAD = 64 * 1024


class _BodyTooLarge(Exception):
    pass


def _error(status: int, code: str, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def _limited(request: Request, limit: int) -> Request:
    """The same request, its body cut off with :class:`_BodyTooLarge` once more than ``limit`` bytes arrive."""
    received = 0
    receive = request.receive

    async def limited_receive():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge()
        return message

    return Request(request.scope, limited_receive)


async def _read_upload(request: Request, max_bytes: int) -> tuple:
    """(image bytes, name) from the multipart field ``image`` or the raw body; BadInput when there is none."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadInput(400, "bad_content_length", f"Content-Length {declared!r} is not a number")
        if int(declared) > max_bytes + _MULTIPART_OVERHEAD:
            raise BadInput(413, "too_many_bytes", f"the request body is {declared} bytes, more than the server's "
                                                  f"limit of {max_bytes} bytes")
    content_type = request.headers.get("content-type", "")
    limited = _limited(request, max_bytes + _MULTIPART_OVERHEAD)
    try:
        if content_type.startswith("multipart/form-data"):
            try:
                form = await limited.form(max_files=4, max_fields=16)
            except _BodyTooLarge:
                raise
            except Exception as exc:  # starlette raises its own parse errors (MultiPartException, HTTPException)
                raise BadInput(400, "bad_multipart", f"the multipart body cannot be parsed: {exc}") from None
            try:
                field = form.get("image")
                if field is None:
                    raise BadInput(400, "missing_field", "the multipart form has no field 'image' (fields sent: "
                                                         f"{', '.join(form.keys()) or 'none'}); send the photo as "
                                                         "field 'image'")
                if isinstance(field, str):
                    raise BadInput(400, "not_a_file", "field 'image' is text, not a file upload")
                data = await field.read()
                name = field.filename or "image"
            finally:
                await form.close()
        elif content_type.startswith("application/x-www-form-urlencoded"):
            raise BadInput(400, "missing_field", "a url-encoded form cannot carry a file: send multipart/form-data "
                                                 "with field 'image', or the image bytes as the body")
        else:
            data, name = await limited.body(), "body"
    except _BodyTooLarge:
        raise BadInput(413, "too_many_bytes", f"the request body is more than the server's limit of {max_bytes} "
                                              "bytes") from None
    return data, name


def create_app(service: PredictionService, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS, close_service_on_shutdown: bool = True) -> Starlette:
    """The Starlette application serving ``service`` (see the module docstring for the endpoints)."""

    async def predict(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "png"):
            return _error(400, "bad_format", f"format={fmt!r}: use json or png")
        threshold = request.query_params.get("score_threshold")
        if threshold is not None:
            try:
                threshold = float(threshold)
            except ValueError:
                threshold = -1.0
            if not 0.0 <= threshold <= 1.0:
                return _error(400, "bad_score_threshold", f"score_threshold={request.query_params['score_threshold']!r}"
                                                          ": use a number in [0, 1]")
        try:
            data, name = await _read_upload(request, max_bytes)
            upload = check_upload(data, max_bytes, max_pixels, name)
            future = service.submit(upload, want_png=fmt == "png", score_threshold=threshold)
            answer = await asyncio.wrap_future(future)
        except BadInput as exc:
            return _error(exc.status, exc.code, exc.message)
        except QueueFull as exc:
            return _error(503, "queue_full", str(exc), headers={"Retry-After": str(exc.retry_after)})
        except ServiceStopped as exc:
            return _error(503, "stopping", str(exc), headers={"Retry-After": "5"})
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; uvicorn drops it
        if answer.png is not None:
            return Response(answer.png, media_type="image/png")
        return JSONResponse(answer.result)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "task": service.model.task, "waiting": service.waiting,
                             "queue_size": service.queue_size, "served": service.served})

    async def model(request: Request) -> Response:
        return JSONResponse(dict(service.model_info(), max_bytes=max_bytes, max_pixels=max_pixels))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}")

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        return _error(status, "not_found" if status == 404 else "http_error",
                      f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}")

    async def shutdown() -> None:
        if close_service_on_shutdown:
            await asyncio.get_running_loop().run_in_executor(None, service.close)

    routes = [Route("/", index, methods=["GET"]), Route("/predict", predict, methods=["POST"]),
              Route("/healthz", healthz, methods=["GET"]), Route("/model", model, methods=["GET"]),
              Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        await shutdown()

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={Exception: on_error, 404: not_found, 405: not_found})


def serve(service: PredictionService, host: str = "127.0.0.1", port: int = 8080, max_bytes: int = DEFAULT_MAX_BYTES,
          max_pixels: int = DEFAULT_MAX_PIXELS, log_level: str = "info") -> None:
    """Run the server until SIGINT/SIGTERM; uvicorn finishes the requests in hand, then the service stops.

    Returns normally after either signal (uvicorn hands the signal it caught back to the previous handler
    once it has stopped; the handlers installed here take it as the stop it asked for, so the exit is clean).
    """
    import signal

    import uvicorn

    stopped_by = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: stopped_by.append(number))

    config = uvicorn.Config(create_app(service, max_bytes, max_pixels), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=30, access_log=log_level == "debug")
    server = uvicorn.Server(config)
    server.run()
    if stopped_by:
        log.info("stopped by %s", signal.Signals(stopped_by[0]).name)
