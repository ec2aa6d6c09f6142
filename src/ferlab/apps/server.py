"""The web service: a FastAPI application around one :class:`ModelService`.

``create_app`` loads the model once; every request shares it. Endpoints: ``POST /v1/predict``,
``POST /v1/explain``, ``GET /v1/models``, ``GET /healthz``, the web page at ``/`` and the
OpenAPI docs at ``/docs`` (Swagger UI served locally, like the page: nothing is fetched from
elsewhere). Errors are JSON ``{"error": "..."}`` with a 4xx status (504 past the time limit).
"""

from __future__ import annotations

import functools
import hmac
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
import swagger_ui_bundle
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferlab import __version__
from ferlab.apps.service import ModelService
from ferlab.apps.uploads import IMAGE_TYPES, BodyLimit, sniff_image_type
from ferlab.errors import ConfigError, DataError, ModelError
from ferlab.inference.images import load_image, source_name
from ferlab.inference.results import Explanation, FaceResult

API_KEY_ENV = "FERLAB_API_KEY"
API_KEY_HEADER = "X-API-Key"
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
        "model": "runs/demo",
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


@dataclass(frozen=True)
class ServerSettings:
    """Limits of the service. ``api_key`` (default: ``$FERLAB_API_KEY``), when set, is required
    in the ``X-API-Key`` header of every ``/v1`` request."""

    max_upload_bytes: int = 10 * 2**20
    timeout_s: float = 30.0
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.timeout_s <= 0:
            raise ConfigError(
                f"need max_upload_bytes >= 1 and timeout_s > 0, "
                f"got {self.max_upload_bytes} and {self.timeout_s}"
            )


def create_app(
    model: ModelService | str | Path = "default",
    settings: ServerSettings | None = None,
    *,
    backend: str = "auto",
) -> FastAPI:
    """The application; ``model``: a loaded service, or a model reference to load now."""
    service = (
        model if isinstance(model, ModelService) else ModelService.load(model, backend=backend)
    )
    settings = settings or ServerSettings()
    app = FastAPI(
        title="ferlab",
        version=__version__,
        summary="Facial expression recognition: faces, expressions and Grad-CAM heatmaps.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for kind in _ERROR_STATUS:
        app.add_exception_handler(kind, _ferlab_error)
    app.include_router(_api(service, settings))
    app.include_router(_pages(app))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)))
    return app


def _api(service: ModelService, settings: ServerSettings) -> APIRouter:
    api = APIRouter(prefix="/v1", dependencies=[Depends(_key_check(settings.api_key))])

    @api.get("/models")
    def models() -> dict[str, Any]:
        """The model this server runs."""
        return {"models": [service.describe()]}

    @api.post("/predict", responses={200: {"content": {"application/json": _PREDICT_EXAMPLE}}})
    async def predict(file: ImageUpload) -> dict[str, Any]:
        """Faces (left to right) with box (x1, y1, x2, y2), label, probabilities and, where the
        model has them, valence and arousal; ``faces`` is empty when none is found."""
        data = await _image_bytes(file)
        started = time.perf_counter()
        (height, width), faces = await _in_thread(settings.timeout_s, _predict_job, service, data)
        return {
            "model": service.ref,
            "width": width,
            "height": height,
            "faces": [face.to_dict() for face in faces],
            "time_ms": round(1000 * (time.perf_counter() - started), 1),
        }

    @api.post(
        "/explain",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the overlay as PNG"}},
    )
    async def explain(
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
        ``X-Face`` and ``X-Faces`` (faces in the image) describe it."""
        data = await _image_bytes(file)
        explained, count, png = await _in_thread(
            settings.timeout_s, _explain_job, service, data, face, method, target_class
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

    @pages.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: answers once the model is loaded."""
        return {"status": "ok"}

    @pages.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @pages.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title="ferlab API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    return pages


def _key_check(expected: str | None) -> Callable[[str | None], None]:
    def check(key: Annotated[str | None, Depends(_KEY_HEADER)]) -> None:
        if expected is None:
            return
        if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
            raise HTTPException(401, f"missing or wrong API key (header {API_KEY_HEADER})")

    return check


async def _image_bytes(file: UploadFile) -> bytes:
    data = await file.read()
    if not data:
        raise HTTPException(400, "empty upload: the file holds no bytes")
    if sniff_image_type(data) is None:
        raise HTTPException(415, f"not a supported image: expected {', '.join(IMAGE_TYPES)}")
    return data


async def _in_thread(timeout: float, job: Callable[..., T], *args: Any) -> T:
    """``job(*args, deadline=...)`` in a worker thread, abandoned (504) past ``timeout``."""
    deadline = time.monotonic() + timeout
    call = functools.partial(job, *args, deadline=deadline)
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except TimeoutError:
        raise HTTPException(504, f"the request took longer than {timeout:g} s") from None


def _decode(data: bytes) -> np.ndarray:
    try:
        return load_image(data)
    except DataError as exc:
        raise DataError(f"upload: {str(exc).removeprefix(source_name(data) + ': ')}") from None


def _predict_job(
    service: ModelService, data: bytes, *, deadline: float
) -> tuple[tuple[int, int], list[FaceResult]]:
    image = _decode(data)
    return image.shape[:2], service.predict(image, timeout=deadline - time.monotonic())


def _explain_job(
    service: ModelService,
    data: bytes,
    face: int,
    method: str,
    target_class: str | None,
    *,
    deadline: float,
) -> tuple[Explanation, int, bytes]:
    image = _decode(data)
    explained, count = service.explain(
        image,
        face=face,
        method=method,
        target_class=target_class,
        timeout=deadline - time.monotonic(),
    )
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
        parts.append(f"{where}: {error['msg']}")
    return _error(422, "; ".join(parts))


async def _ferlab_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in _ERROR_STATUS.items() if isinstance(exc, kind))
    return _error(status, str(exc))
