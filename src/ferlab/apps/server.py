"""The web service: a FastAPI application around one :class:`ModelService`.

``create_app`` loads the model once; every request shares it. Endpoints: ``POST /v1/predict``,
``POST /v1/explain``, ``GET /v1/models``, ``GET /healthz``, the web page at ``/`` and the
OpenAPI docs at ``/docs`` (Swagger UI served locally, like the page: nothing is fetched from
elsewhere). Errors are JSON ``{"error": "..."}`` with a 4xx status (504 past the time limit).

Under load: uploads decode within a memory budget that all requests share, large images decoded
reduced (their boxes given back in the upload's pixels); heatmaps run one at a time on a thread of
their own, with 429 to those asked for meanwhile, so predictions keep their pace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
import swagger_ui_bundle
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferlab import __version__
from ferlab.apps.guard import API_KEY_HEADER, ApiKeyGuard, HostOriginGuard
from ferlab.apps.limits import Busy, JobQueue, MemoryBudget, release_free_memory
from ferlab.apps.service import ModelService
from ferlab.apps.uploads import BUSY, IMAGE_TYPES, BodyLimit, sniff_image_type
from ferlab.errors import ConfigError, DataError, ModelError
from ferlab.inference.face_options import FaceOptions
from ferlab.inference.image_results import ImageResult
from ferlab.inference.images import (
    MAX_PIXELS,
    DecodeCost,
    ImageTooLarge,
    decode_cost,
    load_image,
    source_name,
)
from ferlab.inference.motion import Box
from ferlab.inference.results import Explanation, FaceResult

API_KEY_ENV = "FERLAB_API_KEY"
MAX_BOXES = 64  # faces one request may give to classify
STATIC = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_ERROR_STATUS: dict[type[Exception], int] = {
    DataError: 422,
    ConfigError: 422,
    ModelError: 400,
}
_PREDICT_EXAMPLE: dict[str, Any] = {  # runs/demo on the astronaut photo
    "example": {
        "model": "demo",
        "width": 512,
        "height": 512,
        "faces": [
            {
                "box": [178, 63, 267, 175],
                "label": "happy",
                "score": 0.5844,
                "probs": {
                    "angry": 0.0633,
                    "disgust": 0.0437,
                    "fear": 0.0589,
                    "happy": 0.5844,
                    "sad": 0.0548,
                    "surprise": 0.0322,
                    "neutral": 0.1627,
                },
                "detection_score": 0.93,
            }
        ],
        "time_ms": 62.1,
    }
}
T = TypeVar("T")
ImageUpload = Annotated[UploadFile, File(description=f"an image file ({', '.join(IMAGE_TYPES)})")]
_KEY_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
_BEARER = HTTPBearer(auto_error=False)
_PIXEL = re.compile(r"-?[0-9]{1,9}", re.ASCII)  # a box coordinate
_HELD_COPIES = 3  # a decoded image's array, and the copies a heatmap makes of it


@dataclass(frozen=True)
class ServerSettings:
    """Limits of the service. ``api_key`` (default: ``$FERLAB_API_KEY``), when set, is required
    in the ``X-API-Key`` header (or ``Authorization: Bearer``) of every ``/v1`` request.
    ``host`` is the address the server is bound to: requests must name it, a loopback name or
    one of ``allow_origins`` in their Host header, and may come from no other web page's origin.
    Decoded uploads share ``decode_budget_bytes``; sides over ``max_side`` are decoded reduced.
    Heatmaps run one at a time (``explain_queue`` more may wait, others get 429) and may take
    ``explain_timeout_s``; other requests ``timeout_s``, their upload included."""

    max_upload_bytes: int = 10 * 2**20
    timeout_s: float = 30.0
    explain_timeout_s: float = 120.0
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    host: str = "127.0.0.1"
    allow_origins: tuple[str, ...] = ()
    max_side: int = 4096
    decode_budget_bytes: int = 2**30
    explain_queue: int = 0

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1:
            megabytes = self.max_upload_bytes / 2**20
            raise ConfigError(
                f"max_upload_bytes (--max-upload-mb) must be above 0, got {megabytes:g} MB"
            )
        for name, flag in (("timeout_s", "timeout"), ("explain_timeout_s", "explain-timeout")):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(
                    f"{name} (--{flag}) must be a number of seconds above 0, "
                    f"got {getattr(self, name)}"
                )
        if self.max_side < 1 or self.decode_budget_bytes < 1 or self.explain_queue < 0:
            raise ConfigError(
                f"need max_side >= 1, decode_budget_bytes >= 1 and explain_queue >= 0, got "
                f"{self.max_side}, {self.decode_budget_bytes} and {self.explain_queue}"
            )


def create_app(
    model: ModelService | str | Path = "default",
    settings: ServerSettings | None = None,
    *,
    options: FaceOptions | None = None,
    backend: str = "auto",
    prior_tau: float | None = None,
) -> FastAPI:
    """The application; ``model``: a loaded service, or a model reference to load now (on
    ``backend``, with ``options`` and ``prior_tau``: see ``Recognizer``)."""
    service = (
        model
        if isinstance(model, ModelService)
        else ModelService.load(model, options, backend=backend, prior_tau=prior_tau)
    )
    settings = settings or ServerSettings()
    explainer = JobQueue(settings.explain_queue, "heatmap")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        explainer.close()

    app = FastAPI(
        title="ferlab",
        version=__version__,
        summary="Facial expression recognition: faces, expressions and Grad-CAM heatmaps.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_upload_bytes, max_seconds=settings.timeout_s
    )
    if settings.api_key:
        app.add_middleware(ApiKeyGuard, key=settings.api_key)
    if settings.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allow_origins),
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Authorization"],
            expose_headers=["X-Label", "X-Score", "X-Face", "X-Faces"],
        )
    app.add_middleware(HostOriginGuard, host=settings.host, allow_origins=settings.allow_origins)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for kind in _ERROR_STATUS:
        app.add_exception_handler(kind, _ferlab_error)
    app.add_exception_handler(MemoryError, _out_of_memory)
    app.include_router(_api(service, settings, explainer))
    app.include_router(_pages(app))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)))
    return app


def _api(service: ModelService, settings: ServerSettings, explainer: JobQueue) -> APIRouter:
    # The guard checks the key before the body is read; these declare it in the API docs.
    schemes = [Depends(_KEY_HEADER), Depends(_BEARER)] if settings.api_key else []
    api = APIRouter(prefix="/v1", dependencies=schemes)
    budget = MemoryBudget(settings.decode_budget_bytes)

    @api.get("/models")
    async def models() -> dict[str, Any]:
        """The model this server runs."""
        return {"models": [service.describe()]}

    @api.post("/predict", responses={200: {"content": {"application/json": _PREDICT_EXAMPLE}}})
    async def predict(
        request: Request,
        file: ImageUpload,
        boxes: Annotated[
            str | None,
            Query(
                description="classify these faces instead of detecting them (video frames "
                "between detections): x1,y1,x2,y2 in the upload's pixels, faces separated by ;"
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Faces (left to right) with box (x1, y1, x2, y2), label, probabilities and, where the
        model has them, valence and arousal; ``faces`` is empty when none is found."""
        await _check_request(request, {"boxes"})
        given = None if boxes is None else _parse_boxes(boxes)
        data = await _image_bytes(file)
        started = time.perf_counter()
        result = await _in_thread(
            settings.timeout_s,
            None,
            _predict_job,
            service,
            _Upload(data, settings, budget),
            given,
        )
        time_ms = round(1000 * (time.perf_counter() - started), 1)
        return {"model": service.name, **result.to_dict(), "time_ms": time_ms}

    @api.post(
        "/explain",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the overlay as PNG"}},
    )
    async def explain(
        request: Request,
        file: ImageUpload,
        face: Annotated[int, Query(ge=1, description="face number, left to right")] = 1,
        method: Annotated[str, Query(description="gradcam | gradcam++ | eigencam | scorecam")] = (
            "gradcam"
        ),
        target_class: Annotated[
            str | None, Query(description="class to explain (default: the prediction)")
        ] = None,
    ) -> Response:
        """Grad-CAM heatmap over one face crop, as PNG; headers ``X-Label``, ``X-Score``,
        ``X-Face`` and ``X-Faces`` (faces in the image) describe it. Heatmaps are made one at a
        time: 429 while one is being made (and the queue, if any, is full)."""
        await _check_request(request, {"face", "method", "target_class"})
        service.check_explain(method, target_class)
        data = await _image_bytes(file)
        upload = _Upload(data, settings, budget)
        upload.cost()  # a bad image gets its answer at once, not a 429 while a heatmap runs
        explained, count, png = await _in_thread(
            settings.explain_timeout_s,
            explainer,
            _explain_job,
            service,
            upload,
            face,
            method,
            target_class,
        )
        headers = {
            "X-Label": explained.label,
            "X-Score": f"{explained.score:.4f}",
            "X-Face": str(explained.face),
            "X-Faces": str(count),
        }
        return Response(png, media_type="image/png", headers=headers)

    return api


def _pages(app: FastAPI) -> APIRouter:
    pages = APIRouter()

    @pages.api_route("/healthz", methods=["HEAD"], include_in_schema=False)
    @pages.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: answers once the model is loaded."""
        return {"status": "ok"}

    @pages.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @pages.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title="ferlab API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    return pages


async def _check_request(request: Request, parameters: set[str]) -> None:
    """422 for a query parameter the endpoint does not take or one given twice, for more than
    one ``file`` part and for other parts: nothing a client sends is silently dropped."""
    unknown = sorted(set(request.query_params) - parameters)
    if unknown:
        takes = ", ".join(sorted(parameters))
        raise HTTPException(422, f"unknown query parameter(s) {', '.join(unknown)}; takes {takes}")
    for name in parameters:
        if len(request.query_params.getlist(name)) > 1:
            raise HTTPException(422, f"{name}: given more than once")
    form = await request.form()
    if len(form.getlist("file")) > 1:
        raise HTTPException(422, "file: one image per request")
    others = sorted(set(form) - {"file"})
    if others:
        raise HTTPException(422, f"form part(s) {_short(', '.join(others))}: takes only file")


async def _image_bytes(file: UploadFile) -> bytes:
    data = await file.read()
    if not data:
        raise HTTPException(400, "empty upload: the file holds no bytes")
    if sniff_image_type(data) is None:
        raise HTTPException(415, f"not a supported image: expected {', '.join(IMAGE_TYPES)}")
    return data


async def _in_thread(
    timeout: float, queue: JobQueue | None, job: Callable[..., T], *args: Any
) -> T:
    """``job(*args, deadline=...)`` in a worker thread (or on ``queue``: 429 when it is full),
    abandoned (504) past ``timeout``."""
    deadline = time.monotonic() + timeout
    call = functools.partial(job, *args, deadline=deadline)
    try:
        with anyio.fail_after(timeout):
            if queue is None:
                return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
            queued: Future[T] = queue.submit(call)
            return await asyncio.wrap_future(queued)
    except Busy as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "1"}) from None
    except TimeoutError:
        raise HTTPException(504, f"the request took longer than {timeout:g} s") from None


@dataclass(frozen=True)
class _Upload:
    data: bytes
    settings: ServerSettings
    budget: MemoryBudget

    def cost(self) -> DecodeCost:
        """What decoding the image takes (read from its header); 413 for an image too large to
        decode within the limits."""
        try:
            with _as_upload():
                cost = decode_cost(self.data, max_side=self.settings.max_side)
        except ImageTooLarge as exc:
            raise HTTPException(413, f"image too large: {exc}") from None
        (width, height), budget = cost.size, self.budget.total
        if width * height > MAX_PIXELS:
            raise HTTPException(
                413, f"image too large: {width}x{height} is over the {MAX_PIXELS / 1e6:g} MP limit"
            )
        if cost.peak_bytes > budget:
            raise HTTPException(
                413,
                f"image too large: decoding {width}x{height} takes about "
                f"{cost.peak_bytes / 2**20:.0f} MiB, over the {budget / 2**20:.0f} MiB budget",
            )
        return cost

    @contextmanager
    def decoded(self, deadline: float) -> Iterator[tuple[np.ndarray, float, tuple[int, int]]]:
        """The image, reduced to ``max_side``, the factor it was reduced by and the upload's own
        (width, height), while it holds its share of the memory budget (see :meth:`cost`)."""
        cost = self.cost()
        width, height = cost.size
        with self.budget.hold(cost.peak_bytes, timeout=deadline - time.monotonic()) as shrink:
            with _as_upload():
                image = load_image(self.data, max_side=self.settings.max_side)
            shrink(_HELD_COPIES * image.nbytes)
            if (image.shape[1] >= image.shape[0]) != (width >= height):  # EXIF turned it
                width, height = height, width
            yield image, max(width, height) / max(image.shape[:2]), (width, height)


@contextmanager
def _as_upload() -> Iterator[None]:
    """Decoding errors name the upload."""
    try:
        yield
    except DataError as exc:
        raise type(exc)(f"upload: {str(exc).removeprefix(source_name(b'') + ': ')}") from None


def _parse_boxes(text: str) -> list[Box]:
    """``x1,y1,x2,y2;...`` as boxes; 422 unless each has four integers with x1 < x2, y1 < y2."""
    boxes = []
    for part in text.split(";"):
        values = part.split(",")
        if len(values) != 4 or not all(_PIXEL.fullmatch(value.strip()) for value in values):
            raise HTTPException(
                422, f"boxes: {_short(part)!r} is not x1,y1,x2,y2 in integers of up to 9 digits"
            )
        x1, y1, x2, y2 = (int(value) for value in values)
        if not (x1 < x2 and y1 < y2):
            raise HTTPException(422, f"boxes: {_short(part)!r} is empty (need x1 < x2 and y1 < y2)")
        boxes.append((x1, y1, x2, y2))
    if len(boxes) > MAX_BOXES:
        raise HTTPException(422, f"boxes: {len(boxes)} given, at most {MAX_BOXES}")
    return boxes


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _predict_job(
    service: ModelService, upload: _Upload, boxes: list[Box] | None, *, deadline: float
) -> ImageResult:
    """The upload's faces (or those at ``boxes``, in its pixels), boxes and size in its own
    pixels (also where it was decoded reduced)."""
    with upload.decoded(deadline) as (image, scale, (width, height)):
        inside = None if boxes is None else _boxes_inside(boxes, scale, image.shape)
        faces = service.predict(image, boxes=inside, timeout=deadline - time.monotonic())
    if scale != 1:
        faces = [_rescaled(face, scale, width, height) for face in faces]
    return ImageResult(None, width, height, faces)


def _boxes_inside(boxes: list[Box], scale: float, shape: tuple[int, ...]) -> list[Box]:
    """Upload-pixel ``boxes`` in the decoded image's pixels, cut to it; DataError for a box
    outside it."""
    height, width = shape[:2]
    inside = []
    for box in boxes:
        x1, y1, x2, y2 = (round(value / scale) for value in box)
        cut = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
        if cut[0] >= cut[2] or cut[1] >= cut[3]:
            raise DataError(f"boxes: {box} lies outside the image")
        inside.append(cut)
    return inside


def _rescaled(face: FaceResult, scale: float, width: int, height: int) -> FaceResult:
    if face.box is None:
        return face
    x1, y1, x2, y2 = (round(value * scale) for value in face.box)
    return dataclasses.replace(face, box=(x1, y1, min(x2, width), min(y2, height)))


def _explain_job(
    service: ModelService,
    upload: _Upload,
    face: int,
    method: str,
    target_class: str | None,
    *,
    deadline: float,
) -> tuple[Explanation, int, bytes]:
    try:
        with upload.decoded(deadline) as (image, _, _):
            explained, count = service.explain(
                image,
                face=face,
                method=method,
                target_class=target_class,
                timeout=deadline - time.monotonic(),
            )
    finally:
        release_free_memory()  # ScoreCAM's hundreds of MB of masked copies
    buffer = io.BytesIO()
    Image.fromarray(explained.overlay).save(buffer, format="PNG")
    return explained, count, buffer.getvalue()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"][1:]) or str(error["loc"][0])
        message = error["msg"]
        if tuple(error["loc"]) == ("body", "file"):
            message = _FILE_PART.get(error["type"], message)
        parts.append(f"{where}: {message}")
    return _error(422, "; ".join(parts))


_FILE_PART = {  # what the request's file part lacks, by pydantic's error type
    "missing": "no image in the form (send it as the multipart part file; an empty file field "
    "or an unfinished body holds none)",
    "value_error": "a text field, not an uploaded file (send the image as a file)",
}


async def _out_of_memory(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, BUSY, {"Retry-After": "1"})


async def _ferlab_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in _ERROR_STATUS.items() if isinstance(exc, kind))
    return _error(status, str(exc))
