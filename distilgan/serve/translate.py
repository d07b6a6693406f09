"""``POST /translate`` and ``GET /translators``: image-to-image translation with the served translators.

A request carries one image (a multipart file part, or base64 in a JSON body), the ``edit`` (name or
index) and, when the server holds several translators, the ``model``. Cheap checks come first (model,
edit, byte count) and the decode last (``uploads.decode_upload``), so a wrong request costs no
decoding. The image is converted to the model's channels and resized to its resolution exactly as
``ImageTranslator.translate(image, resize=True)`` does, and the response says so.

Why one endpoint takes both encodings: a browser or ``curl -F`` sends a file as multipart without
inflating it, a JSON client sends base64 without a form library; both end in the same checks. The
body is parsed here rather than by FastAPI's ``UploadFile``/``Form`` parameters, so that every
mistake (a missing file, a text part where the file belongs, a 415 body) gets the API's own one-line
message instead of a generic validation error.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from distilgan.errors import UserError
from distilgan.serve.backend import ServedTranslator
from distilgan.serve.http import ApiError, size_text
from distilgan.serve.schemas import (
    TranslateForm,
    TranslateRequest,
    TranslateResponse,
    TranslatorsResponse,
    describe_validation_errors,
)
from distilgan.serve.uploads import FORMATS, Upload, UploadLimits, decode_upload, encode_png

FORM_FIELDS = tuple(TranslateForm.model_fields)
JSON_FIELDS = tuple(TranslateRequest.model_fields)
JSON_EXAMPLE = '{"image_base64": "<base64 of a PNG>", "edit": "automobile:truck"}'
OUTPUT_FORMATS = ("png", "json")
MAX_TEXT_PART = 64 * 1024  # a form's text fields are names, never this long
MAX_FORM_FIELDS = 16  # above the fields there are, so that an extra one is named as unknown rather than counted


@dataclass
class TranslateInput:
    """A request's fields, whichever encoding they came in."""

    image: bytes
    edit: int | str | None
    model: str | None
    format: str


@dataclass
class Translated:
    model: str
    edit: str
    edit_index: int
    upload: Upload
    image: np.ndarray  # uint8 (H, W, C)
    translation_ms: float
    queue_ms: float
    decode_ms: float


class TranslationService:
    """The served translators by name, the upload limits, and the request -> image plan."""

    def __init__(self, translators: Sequence[ServedTranslator], limits: UploadLimits | None = None,
                 lock: threading.Lock | None = None) -> None:
        if not translators:
            raise UserError("no translators to serve (give --translator DIR)")
        self.translators = {t.model_name: t for t in translators}
        self.limits = limits or UploadLimits()
        # shared with the generator when there is one: on CPU one forward pass already uses every core
        self.lock = lock or threading.Lock()
        self.requests_served = 0

    def choose(self, model: str | None) -> ServedTranslator:
        names = ", ".join(self.translators)
        if model is None:
            if len(self.translators) == 1:
                return next(iter(self.translators.values()))
            raise ApiError(422, f"model is missing: this server has {len(self.translators)} translators ({names}); "
                                "send model=NAME (GET /translators lists them with their edits)")
        if model not in self.translators:
            raise ApiError(422, f"unknown model '{model}' (this server's translators: {names}; "
                                "GET /translators lists them with their edits)")
        return self.translators[model]

    def edit_index(self, translator: ServedTranslator, edit: int | str | None) -> int:
        listed = ", ".join(translator.edits)
        if edit is None:
            if len(translator.edits) == 1:
                return 0
            raise ApiError(422, f"edit is missing: translator '{translator.model_name}' does {len(translator.edits)} "
                                f"edits ({listed}); send edit=NAME or its index")
        try:
            return translator.edit_index(edit)
        except UserError as err:
            raise ApiError(422, f"edit: {err}") from None

    def translate(self, request: TranslateInput) -> Translated:
        translator = self.choose(request.model)
        index = self.edit_index(translator, request.edit)
        started = time.perf_counter()
        upload = decode_upload(request.image, self.limits, translator.resolution, translator.channels)
        queued = time.perf_counter()
        with self.lock:
            start = time.perf_counter()
            image = translator.translate(upload.array, index)
            done = time.perf_counter()
            self.requests_served += 1
        return Translated(translator.model_name, translator.edits[index], index, upload, image,
                          (done - start) * 1000, (start - queued) * 1000, (queued - started) * 1000)

    def listing(self) -> dict[str, Any]:
        return {
            "translators": [t.describe() for t in self.translators.values()],
            "max_upload_bytes": self.limits.max_bytes,
            "max_upload_pixels": self.limits.max_pixels,
            "formats": list(FORMATS),
        }


def _decode_base64(text: str) -> bytes:
    """Base64 (standard alphabet, whitespace allowed) or a data: URL of it -> bytes."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ApiError(422, "image_base64: a data: URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(422, f"image_base64 is not valid base64 ({err}); send the file's bytes base64-encoded") from None


async def _read_form(request: Request) -> TranslateInput:
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_PART)
    except StarletteHTTPException as err:  # python-multipart's complaint, e.g. two files or no boundary
        raise ApiError(400, f"malformed multipart body: {err.detail} (send one file part 'image' and the text "
                            f"fields {', '.join(FORM_FIELDS[1:])})") from None
    try:
        unknown = [key for key in form.keys() if key not in FORM_FIELDS]
        if unknown:
            raise ApiError(422, f"unknown field '{unknown[0]}' (allowed: {', '.join(FORM_FIELDS)})")
        image = form.get("image")
        if image is None:
            raise ApiError(422, "image is missing: send the image file as the multipart part 'image' (curl -F image=@photo.png)")
        if not isinstance(image, UploadFile):
            raise ApiError(422, "image was sent as a text field: send it as a file part (curl -F image=@photo.png, "
                                "or FormData.append('image', file))")
        text: dict[str, str | None] = {}
        for name in FORM_FIELDS[1:]:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise ApiError(422, f"{name} was sent as a file: send it as a text field (curl -F {name}=VALUE)")
            text[name] = value or None  # an empty field (an unset <select>) is a field left out
        output = text["format"] or "png"
        if output not in OUTPUT_FORMATS:
            raise ApiError(422, f"format: must be 'png' or 'json' (got {output!r})")
        return TranslateInput(await image.read(), text["edit"], text["model"], output)
    finally:
        await form.close()


async def read_translate_request(request: Request) -> TranslateInput:
    """A multipart form or a JSON body -> the request's fields; ApiError for anything malformed."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _read_form(request)
    if media == "application/json" or media.endswith("+json"):
        body = await request.body()
        if not body.strip():
            raise ApiError(422, f"request body is missing (send a JSON object such as {JSON_EXAMPLE})")
        try:
            fields = TranslateRequest.model_validate_json(body)
        except ValidationError as err:
            status, message = describe_validation_errors(list(err.errors()), fields=JSON_FIELDS, example=JSON_EXAMPLE)
            raise ApiError(status, message) from None
        return TranslateInput(_decode_base64(fields.image_base64), fields.edit, fields.model, fields.format)
    shown = f"got '{content_type}'" if content_type else "no Content-Type given"
    raise ApiError(415, "send the image as multipart/form-data (a file part 'image') or as JSON with image_base64 "
                        f"and Content-Type: application/json ({shown})")


def _headers(result: Translated, encode_ms: float) -> dict[str, str]:
    upload = result.upload
    headers = {
        "X-Model": result.model,
        "X-Edit": quote(result.edit, safe=" :->_.,()"),  # header values are latin-1; edit names need not be
        "X-Edit-Index": str(result.edit_index),
        "X-Input-Size": f"{upload.width}x{upload.height}",
        "X-Input-Mode": upload.mode,
        "X-Resized": "true" if upload.resized else "false",
        "X-Translation-Ms": f"{result.translation_ms:.3f}",
        "X-Queue-Ms": f"{result.queue_ms:.3f}",
        "X-Decode-Ms": f"{result.decode_ms:.3f}",
        "X-Encode-Ms": f"{encode_ms:.3f}",
    }
    if upload.converted:
        headers["X-Converted"] = upload.converted
    if upload.notes:
        headers["X-Notes"] = "; ".join(upload.notes)
    return headers


def respond(result: Translated, output: str) -> Response:
    encode_start = time.perf_counter()
    png = encode_png(result.image)
    if output == "png":
        return Response(png, media_type="image/png", headers=_headers(result, (time.perf_counter() - encode_start) * 1000))
    upload = result.upload
    model_input = encode_png(upload.array)
    height, width = result.image.shape[:2]
    return JSONResponse({
        "model": result.model,
        "edit": result.edit,
        "edit_index": result.edit_index,
        "width": int(width),
        "height": int(height),
        "input_format": upload.format,
        "input_width": upload.width,
        "input_height": upload.height,
        "input_mode": upload.mode,
        "resized": upload.resized,
        "converted": upload.converted,
        "notes": upload.notes,
        "translation_ms": round(result.translation_ms, 3),
        "queue_ms": round(result.queue_ms, 3),
        "decode_ms": round(result.decode_ms, 3),
        "encode_ms": round((time.perf_counter() - encode_start) * 1000, 3),
        "image_png_base64": base64.b64encode(png).decode(),
        "input_png_base64": base64.b64encode(model_input).decode(),
    })


def body_limit(limits: UploadLimits) -> tuple[int, str]:
    """``BodyLimit``'s entry for POST /translate: the byte limit and the fix its 413 names."""
    return limits.body_bytes(), (f"the image may be at most {size_text(limits.max_bytes)}: send a smaller file, "
                                 "or start the server with a larger --max-upload-bytes")


def add_translate_routes(app: FastAPI, service: TranslationService | None, errors: dict[int | str, Any]) -> None:
    """``GET /translators`` always (an empty list without translators, so a client or the page can
    ask); ``POST /translate`` only when there is something to translate with."""

    @app.get("/translators", response_model=TranslatorsResponse, summary="The translators served, their edits and the upload limits")
    def translators() -> dict[str, Any]:
        if service is None:
            return {"translators": [], "max_upload_bytes": 0, "max_upload_pixels": 0, "formats": list(FORMATS)}
        return service.listing()

    if service is None:
        return
    request_body = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": TranslateForm.model_json_schema()},
            "application/json": {"schema": TranslateRequest.model_json_schema()},
        },
    }

    @app.post(
        "/translate",
        summary="Translate an image with an edit",
        description=(
            "Apply an edit (e.g. automobile:truck) to one PNG or JPEG image, sent as a multipart file part 'image' "
            "or base64 in JSON. An image of another size is resized to the model's resolution (area when shrinking, "
            "bicubic when enlarging; non-square ones are stretched) and converted to its channels (alpha dropped); "
            'the response says so. "format": "png" answers image/png with headers X-Model, X-Edit (percent-encoded), '
            "X-Edit-Index, X-Input-Size, X-Input-Mode, X-Resized, X-Converted and X-Notes (when anything was "
            'converted or resized), X-Translation-Ms, X-Queue-Ms, X-Decode-Ms, X-Encode-Ms; "format": "json" answers '
            "JSON with the result and the model's input as base64 PNGs. Limits: --max-upload-bytes and "
            "--max-upload-pixels (413); not a PNG or JPEG: 415; damaged, unknown edit or model: 422."
        ),
        openapi_extra={"requestBody": request_body},
        responses={200: {"content": {"image/png": {}}, "model": TranslateResponse}, **errors},
    )
    async def translate(request: Request) -> Response:
        fields = await read_translate_request(request)
        # decoding and the forward pass are CPU work: off the event loop, as sync routes are
        result = await run_in_threadpool(service.translate, fields)
        return await run_in_threadpool(respond, result, fields.format)


__all__ = ["TranslateInput", "TranslationService", "add_translate_routes", "body_limit", "read_translate_request", "respond"]
