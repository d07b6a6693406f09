"""The FastAPI app: ``POST /generate``, ``GET /model`` (with a generator), ``POST /translate``,
``GET /translators`` (``translate.py``, with translators), ``GET /health``, the page and its docs.

Concurrency: every model behind one lock. Requests are handled on Starlette's thread pool; each takes
the lock only for noise + forward pass + quantisation, and encodes its PNGs outside it. Why not a
batching worker that merges concurrent requests: on CPU one forward pass already uses every core
(torch intra-op threads), a request already carries up to --max-count images, and a lock keeps each
response's bytes independent of what else was in flight. Scale out with ``--workers`` (processes).

Limits: the body is read by ``BodyLimit`` (``http.py``) before anything parses it (> 64 KiB -> 413;
/translate: its upload limit, ``uploads.UploadLimits``); fields are validated strictly (unknown fields,
wrong types, out-of-range values -> 422); every error is ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from distilgan import __version__
from distilgan.errors import UserError
from distilgan.serve.backend import Backend, ServedTranslator
from distilgan.serve.http import MAX_BODY_BYTES, ApiError, BodyLimit, error_response
from distilgan.serve.schemas import (
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    MAX_SEED,
    ModelResponse,
    describe_validation_errors,
)
from distilgan.serve.translate import TranslationService, add_translate_routes, body_limit
from distilgan.serve.uploads import UploadLimits, encode_png
from distilgan.utils.extras import need
from distilgan.utils.images import make_grid
from distilgan.utils.labels import resolve_labels as resolve_labels_strict
from distilgan.utils.latent import choose_distribution, model_classes, model_z_distribution
from distilgan.utils.noise import ZDistribution, balanced_labels, rng
from distilgan.utils.seeds import parse_seeds, z_for_seeds

CRASH_LOG = logging.getLogger("distilgan.serve")  # uvicorn prints it with its own log lines

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_COUNT = 64
SETTINGS_ENV = "DISTILGAN_SERVE_SETTINGS"  # how --workers N hands its settings to worker processes
# The page loads nothing from elsewhere; the policy makes the browser enforce that.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


def endpoints(generator: bool, translators: bool) -> str:
    """The endpoints this app serves, for the 404/405 messages."""
    served = ["GET / (page)", "GET /health"]
    served += ["GET /model", "POST /generate"] if generator else []
    served += ["GET /translators"] + (["POST /translate"] if translators else [])
    return ", ".join(served + ["GET /openapi.json", "GET /docs"])


@dataclass
class Generated:
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray  # int64
    seed: int | None  # None for a request with seeds
    nrow: int
    generation_ms: float
    queue_ms: float
    z_distribution: ZDistribution
    seeds: list[int] | None = None  # every image's own seed


def resolve_labels(labels: Sequence[int | str], class_names: Sequence[str],
                   allowed: Sequence[int] | None = None) -> np.ndarray:
    """Ints are class indices, strings class names (or digit strings); -> int64 indices.

    The one resolver (``utils.labels``), strict as an API is, limited to the trained classes."""
    try:
        return resolve_labels_strict(labels, class_names, strict=True, allowed=allowed, where="labels")
    except UserError as err:
        raise ApiError(422, str(err)) from None


class GenerationService:
    """One backend, one lock, and the request -> images plan."""

    def __init__(self, backend: Backend, max_count: int = DEFAULT_MAX_COUNT, lock: threading.Lock | None = None) -> None:
        self.backend, self.max_count = backend, max_count
        # what the model was trained on: every request's default (backends without them: N(0, I), all)
        self.z_distribution, self.classes = model_z_distribution(backend), model_classes(backend)
        self.lock = lock or threading.Lock()  # shared with the translators when there are any
        self.requests_served = 0

    def seeds(self, request: GenerateRequest) -> list[int] | None:
        """The request's per-image seed list (from a list or "0-3,7"), checked; None without one."""
        if request.seeds is None:
            return None
        given = [name for name in ("seed", "count", "total") if getattr(request, name) is not None]
        if given:
            raise ApiError(422, f"seeds gives one image per seed for every label; leave out {' and '.join(given)}")
        try:
            listed = request.seeds
            seeds = listed if isinstance(listed, list) else parse_seeds(listed, limit=self.max_count, seed_max=MAX_SEED)
        except UserError as err:
            raise ApiError(422, f"seeds: {err}") from None
        if not seeds:
            raise ApiError(422, "seeds is empty (give at least one seed, or leave seeds out)")
        return seeds

    def plan(self, request: GenerateRequest) -> tuple[np.ndarray, int]:
        """-> (label of every image, images per grid row), after checking the request's bounds."""
        seeds = self.seeds(request)
        if request.count is not None and request.total is not None:
            raise ApiError(422, "give either count (images per label) or total (images in all), not both")
        if request.labels is not None and not request.labels:
            raise ApiError(422, "labels is empty (give at least one class, or leave labels out for every class)")
        if request.labels is not None and len(request.labels) > self.max_count:
            raise ApiError(422, f"{len(request.labels)} labels given; this server makes at most {self.max_count} images per request")
        classes = (
            resolve_labels(request.labels, self.backend.class_names, allowed=self.classes)
            if request.labels is not None
            else np.asarray(self.classes, dtype=np.int64)
        )
        per_label = len(seeds) if seeds is not None else request.count if request.total is None else None
        wanted = request.total if request.total is not None else len(classes) * (per_label or 1)
        if wanted > self.max_count:
            raise ApiError(
                422,
                f"{wanted} images asked for; this server makes at most {self.max_count} per request "
                "(ask for fewer, or start it with a larger --max-count)",
            )
        if per_label is not None and (per_label > 1 or seeds is not None):
            return np.repeat(classes, per_label), per_label  # one grid row per label (a column per seed)
        labels = balanced_labels(0, wanted, classes)
        return labels, max(1, math.ceil(math.sqrt(wanted)))

    def distribution(self, request: GenerateRequest) -> ZDistribution:
        """The model's z distribution, or the request's truncation / truncation_kind override."""
        try:
            return choose_distribution(self.z_distribution, request.truncation, request.truncation_kind)
        except UserError as err:
            raise ApiError(422, str(err)) from None

    def generate(self, request: GenerateRequest) -> Generated:
        labels, nrow = self.plan(request)
        distribution = self.distribution(request)
        listed = self.seeds(request)
        seeds = None if listed is None else [s for _ in range(len(labels) // len(listed)) for s in listed]
        seed = None if seeds is not None else request.seed if request.seed is not None else secrets.randbelow(2**31)
        queued = time.perf_counter()
        with self.lock:
            start = time.perf_counter()
            # The same z as StudentGenerator.generate(labels, seed | seeds=, truncation): one draw for the
            # request, or one draw per image from its own seed.
            if seeds is None:
                images = self.backend.generate(distribution.sample(rng(seed), len(labels), self.backend.z_dim), labels)
            else:  # one pass per image, as StudentGenerator does: the same pixels as that image made alone
                z = z_for_seeds(distribution, seeds, self.backend.z_dim)
                images = np.concatenate([self.backend.generate(z[i : i + 1], labels[i : i + 1]) for i in range(len(z))])
            done = time.perf_counter()
            self.requests_served += 1
        return Generated(images, labels, seed, nrow, (done - start) * 1000, (start - queued) * 1000, distribution, seeds)


ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 405, 413, 415, 422, 500)}


def add_generator_routes(app: FastAPI, service: GenerationService) -> None:
    """``POST /generate`` and ``GET /model`` for the served generator."""
    backend, max_count = service.backend, service.max_count

    @app.post(
        "/generate",
        summary="Generate images",
        description=(
            'Generate images for class labels. "format": "grid" answers one PNG (image/png) with headers '
            "X-Seed (X-Seeds for a request with seeds), X-Generation-Ms, X-Queue-Ms, X-Image-Count, X-Labels, "
            "X-Grid-Nrow and X-Z-Distribution; "
            '"format": "images" answers JSON with every image and the grid as base64 PNGs. The same '
            "labels, count/total, seed and truncation always give the same images."
        ),
        responses={200: {"content": {"image/png": {}}, "model": GenerateResponse}, **ERRORS},
    )
    def generate(body: GenerateRequest) -> Response:
        result = service.generate(body)
        encode_start = time.perf_counter()
        grid = encode_png(make_grid(result.images, nrow=result.nrow))
        if body.format == "grid":
            encode_ms = (time.perf_counter() - encode_start) * 1000
            headers = {
                "X-Seed": str(result.seed),
                "X-Generation-Ms": f"{result.generation_ms:.3f}",
                "X-Queue-Ms": f"{result.queue_ms:.3f}",
                "X-Encode-Ms": f"{encode_ms:.3f}",
                "X-Image-Count": str(len(result.labels)),
                "X-Grid-Nrow": str(result.nrow),
                "X-Labels": ",".join(str(int(label)) for label in result.labels),
                "X-Z-Distribution": result.z_distribution.describe(),
            }
            if result.seeds is not None:  # no request seed then: each image's own instead
                del headers["X-Seed"]
                headers["X-Seeds"] = ",".join(str(s) for s in result.seeds)
            return Response(grid, media_type="image/png", headers=headers)
        names = backend.class_names
        own = result.seeds or [None] * len(result.labels)
        images = [
            {"label": int(label), "class_name": names[label], **({} if s is None else {"seed": s}),
             "png_base64": base64.b64encode(encode_png(image)).decode()}
            for image, label, s in zip(result.images, result.labels, own)
        ]
        height, width = result.images.shape[1:3]
        return JSONResponse(
            {
                "seed": result.seed,
                **({} if result.seeds is None else {"seeds": result.seeds}),
                "truncation": body.truncation,
                "z_distribution": result.z_distribution.to_dict(),
                "count": len(images),
                "nrow": result.nrow,
                "width": int(width),
                "height": int(height),
                "generation_ms": round(result.generation_ms, 3),
                "queue_ms": round(result.queue_ms, 3),
                "encode_ms": round((time.perf_counter() - encode_start) * 1000, 3),
                "images": images,
                "grid_png_base64": base64.b64encode(grid).decode(),
            }
        )

    model_facts = {
        "backend": backend.name,
        "class_names": list(backend.class_names),
        "num_classes": backend.num_classes,
        "resolution": backend.resolution,
        "channels": backend.channels,
        "z_dim": backend.z_dim,
        "z_distribution": service.z_distribution.to_dict(),
        "classes": service.classes,
        "max_count": max_count,
        **backend.describe(),
    }

    @app.get("/model", response_model=ModelResponse, summary="What is served: classes, size, cost, config, figures")
    def model() -> dict[str, Any]:
        return model_facts


def create_app(backend: Backend | None, max_count: int = DEFAULT_MAX_COUNT,
               translators: Sequence[ServedTranslator] = (), limits: UploadLimits | None = None) -> FastAPI:
    """The ASGI app serving ``backend`` (a generator, or None) and ``translators``; the models are the
    ones passed in (loaded once by the caller). ``limits``: what one uploaded image may be."""
    from distilgan.serve.docs import render_docs

    if backend is None and not translators:
        raise UserError("nothing to serve: give a generator (--checkpoint or --model) and/or --translator DIR")
    if translators:
        need("python_multipart", "distilgan serve --translator (image uploads)")
    lock = threading.Lock()  # one forward pass at a time, whichever model: each already uses every core
    service = GenerationService(backend, max_count, lock) if backend is not None else None
    translation = TranslationService(translators, limits, lock) if translators else None
    served = endpoints(service is not None, translation is not None)
    encode_png(np.zeros((1, 1, 3), np.uint8))  # import PIL's PNG writer now, not in the first request
    app = FastAPI(
        title="distilgan serve",
        version=__version__,
        description="Class-conditional image generation with a distilled student generator, and image-to-image "
                    "edits with a distilled translator.",
        docs_url=None,  # FastAPI's docs page loads Swagger UI from a CDN; ours is local
        redoc_url=None,
    )
    app.state.service, app.state.translation = service, translation
    routes = {"/translate": body_limit(translation.limits)} if translation else {}
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, routes=routes)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, err: UserError) -> JSONResponse:
        return error_response(422, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type.lower():
            return error_response(415, f"send the body as JSON with Content-Type: application/json (got '{content_type}')")
        status, message = describe_validation_errors(list(err.errors()))
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 404:
            message = f"not found: {request.url.path} (endpoints: {served})"
        elif err.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path} (endpoints: {served})"
        else:
            message = str(err.detail)
        return error_response(err.status_code, message, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        # The traceback goes to the server's log; the client learns only that it was our fault and
        # which entry to look for (exception text can carry paths and internals).
        incident = uuid.uuid4().hex[:12]
        CRASH_LOG.error("internal error %s on %s %s", incident, request.method, request.url.path, exc_info=err)
        return error_response(500, f"internal error (incident {incident}; the server log has the details)")

    started = time.monotonic()
    # without a generator: the translators' backends (torch, onnxruntime, openvino), each once
    served_backends = ",".join(dict.fromkeys(t.name for t in translators))

    @app.get("/health", response_model=HealthResponse, summary="Liveness and counters")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "backend": backend.name if backend is not None else served_backends,
            "uptime_s": round(time.monotonic() - started, 3),
            "requests_served": service.requests_served if service else 0,
            "generator": service is not None,
            "translators": list(translation.translators) if translation else [],
            "translations_served": translation.requests_served if translation else 0,
        }

    if service is not None:
        add_generator_routes(app, service)
    add_translate_routes(app, translation, ERRORS)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(render_docs(app.openapi()), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """App factory for ``--workers N``: each worker process loads the models once from the
    settings ``distilgan serve`` put in the environment."""
    from distilgan.serve.backend import load_backend, load_translators

    settings = json.loads(os.environ[SETTINGS_ENV])
    threads = int(settings["threads"]) if settings.get("threads") else None
    checkpoint = settings.get("checkpoint")
    backend = load_backend(settings["backend"], checkpoint, device=settings["device"], threads=threads) if checkpoint else None
    translators = load_translators(settings.get("translators") or [], device=settings["device"], threads=threads)
    torch = sys.modules.get("torch")  # loaded only when a model runs with PyTorch; exports got their threads above
    if threads and torch is not None:
        torch.set_num_threads(threads)
    limits = UploadLimits(**settings["upload_limits"]) if settings.get("upload_limits") else None
    return create_app(backend, max_count=int(settings["max_count"]), translators=translators, limits=limits)


__all__ = [
    "MAX_BODY_BYTES", "ApiError", "BodyLimit", "GenerationService", "add_generator_routes", "app_from_env", "create_app",
    "endpoints", "resolve_labels",
]
