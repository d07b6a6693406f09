"""The HTTP API's request and response shapes (pydantic), and turning validation errors into one line.

Every error the API returns is ``{"error": "<one line naming the problem and the fix>"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_SEED = 2**32 - 1


class GenerateRequest(BaseModel):
    """Body of ``POST /generate``. Unknown fields are rejected; types are strict (no "3" for 3)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"labels": ["cat", 5], "count": 4, "seed": 7, "format": "grid"}]},
    )

    labels: list[StrictInt | StrictStr] | None = Field(
        None, description="class indices (ints) or class names; default: every class once"
    )
    count: int | None = Field(
        None, ge=1, description="images per label, grouped by label (grid: one row per label); default 1"
    )
    total: int | None = Field(
        None, ge=1, description="images in total, cycling through the labels (instead of count)"
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="noise seed; default: a random one, returned in the response"
    )
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | StrictStr | None = Field(
        None, description='one image per seed for every label, each from its own seed: a list such as [0, 1, 7] or '
                          'a string such as "0-3,7" (instead of seed, count and total; a grid row per label)',
    )
    # A floor, because redrawing |z| above a tiny threshold would take almost forever.
    truncation: float | None = Field(
        None, ge=0.05, allow_inf_nan=False,
        description="threshold t of z's distribution; default: the model's own (see GET /model z_distribution)",
    )
    truncation_kind: Literal["normal", "truncated", "scaled-truncnorm"] | None = Field(
        None, description='z\'s distribution: "truncated" (|z| > t redrawn), "scaled-truncnorm" (t * truncnorm(-2, 2)) '
                          'or "normal"; default: the model\'s own kind',
    )
    format: Literal["grid", "images"] = Field(
        "grid", description='"grid": one PNG (image/png); "images": JSON with base64 PNGs and the grid'
    )


class GeneratedImage(BaseModel):
    label: int
    class_name: str
    seed: int | None = Field(None, description="this image's own seed (requests with seeds)")
    png_base64: str


class GenerateResponse(BaseModel):
    """Answer of ``POST /generate`` with ``"format": "images"``."""

    seed: int | None = Field(description="the request's seed (null for a request with seeds)")
    seeds: list[int] | None = Field(None, description="every image's own seed, for a request with seeds")
    truncation: float | None
    z_distribution: dict[str, Any] = Field(description="the distribution z was drawn from, e.g. {\"kind\": \"normal\"}")
    count: int = Field(description="number of images")
    nrow: int = Field(description="images per grid row")
    width: int
    height: int
    generation_ms: float = Field(description="noise + model forward + quantisation, in milliseconds")
    queue_ms: float = Field(description="time waiting for the model lock, in milliseconds")
    encode_ms: float = Field(description="PNG encoding, in milliseconds")
    images: list[GeneratedImage]
    grid_png_base64: str


class ErrorResponse(BaseModel):
    error: str = Field(description="one line naming the problem and how to fix it")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    backend: str
    uptime_s: float
    requests_served: int = Field(description="generate requests answered")
    generator: bool = Field(True, description="whether POST /generate and GET /model are served")
    translators: list[str] = Field(default_factory=list, description="names of the translators POST /translate serves")
    translations_served: int = Field(0, description="translate requests answered")


class TranslateRequest(BaseModel):
    """JSON body of ``POST /translate`` (the same fields as its multipart form, with the image as
    base64). Unknown fields are rejected; types are strict."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"image_base64": "iVBORw0KGgo...", "edit": "automobile:truck", "format": "json"}]},
    )

    image_base64: StrictStr = Field(
        description="the image file (PNG or JPEG), base64-encoded; a data: URL (data:image/png;base64,...) also works"
    )
    edit: StrictInt | StrictStr | None = Field(
        None, description="edit name or index (see GET /translators); may be left out for a one-edit translator"
    )
    model: StrictStr | None = Field(
        None, description="translator name (see GET /translators); may be left out when the server has one"
    )
    format: Literal["png", "json"] = Field(
        "png", description='"png": the result as image/png; "json": JSON with the result and the model\'s input as base64 PNGs'
    )


class TranslateForm(BaseModel):
    """Multipart form of ``POST /translate`` (``curl -F image=@photo.png -F edit=automobile:truck``).
    Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    image: bytes = Field(description="the image file (PNG or JPEG), sent as a file part")
    edit: str | None = Field(None, description="edit name or index (see GET /translators); may be left out for a one-edit translator")
    model: str | None = Field(None, description="translator name (see GET /translators); may be left out when the server has one")
    format: Literal["png", "json"] = Field("png", description='"png" (image/png) or "json"')


class TranslateResponse(BaseModel):
    """Answer of ``POST /translate`` with ``"format": "json"``."""

    model: str = Field(description="the translator that ran")
    edit: str = Field(description="the edit's name")
    edit_index: int
    width: int = Field(description="the result's width: the model's resolution")
    height: int
    input_format: str = Field(description="PNG or JPEG")
    input_width: int = Field(description="the upload's width, before any resizing")
    input_height: int
    input_mode: str = Field(description="the upload's PIL mode (RGB, RGBA, L, P, ...)")
    resized: bool = Field(description="whether the upload was resized to the model's resolution")
    converted: str | None = Field(description='a mode conversion that changed the pixels, e.g. "RGBA->RGB" (alpha dropped)')
    notes: list[str] = Field(description="what was done to the upload, in words")
    translation_ms: float = Field(description="the model's forward pass and quantisation, in milliseconds")
    queue_ms: float = Field(description="time waiting for the model lock, in milliseconds")
    decode_ms: float = Field(description="decoding, converting and resizing the upload, in milliseconds")
    encode_ms: float = Field(description="PNG encoding, in milliseconds")
    image_png_base64: str = Field(description="the result")
    input_png_base64: str = Field(description="the model's input: the upload converted and resized")


class EditInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    name: str
    source: str | int | None = Field(None, description="the class the edit starts from, when the checkpoint records it")
    target: str | int | None = Field(None, description="the class it turns images into")


class TranslatorInfo(BaseModel):
    """One served translator."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="what requests give as model")
    architecture: str | None = None
    resolution: int
    channels: int
    num_edits: int
    edits: list[EditInfo]
    parameters: int | None = None
    macs_per_image: int | None = None
    backend: str = Field(description="torch (a checkpoint), onnxruntime or openvino (an export from distilgan export)")
    precision: str | None = Field(None, description="an export's precision: fp32, fp16 or int8")
    device: str
    config: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    figures: dict[str, Any] = Field(default_factory=dict, description="evaluation figures saved with the checkpoint")
    export: dict[str, Any] | None = Field(None, description="an export's distilgan-export.json (source, parity, files, versions)")


class TranslatorsResponse(BaseModel):
    """``GET /translators``: the translators served and the upload limits."""

    translators: list[TranslatorInfo]
    max_upload_bytes: int = Field(description="largest image file POST /translate takes (413 above)")
    max_upload_pixels: int = Field(description="most pixels (width x height) an uploaded image may have (413 above)")
    formats: list[str] = Field(description="image formats POST /translate takes")


class ModelResponse(BaseModel):
    """``GET /model``: what is being served."""

    model_config = ConfigDict(extra="allow")

    backend: str
    class_names: list[str]
    num_classes: int
    resolution: int
    channels: int
    z_dim: int
    z_distribution: dict[str, Any] = Field(default_factory=dict, description="the z distribution the model was trained on")
    classes: list[int] | None = Field(None, description="the classes the model was trained on, in label order")
    parameters: int | None = None
    macs_per_image: int | None = None
    max_count: int
    config: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    figures: dict[str, Any] = Field(default_factory=dict, description="evaluation figures saved with the checkpoint")


FIELDS = tuple(GenerateRequest.model_fields)
EXAMPLE = '{"labels": [0], "count": 4}'
# what a field given as int | str holds, for the error when it is neither
INT_OR_STR = {"edit": "an edit index (integer) or an edit name (string)"}


def _where(loc: tuple[Any, ...]) -> str:
    """("body", "labels", 2) -> "labels[2]"."""
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("int", "str", "float", "list[...]", "literal['grid','images']") or "[" in str(part):
            continue  # pydantic's union-branch names add nothing for the user
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def describe_validation_errors(errors: list[dict[str, Any]], fields: tuple[str, ...] = FIELDS,
                               example: str = EXAMPLE) -> tuple[int, str]:
    """pydantic/FastAPI errors -> (HTTP status, one-line message); ``fields`` and ``example`` are the
    body's (default: POST /generate's)."""
    for error in errors:
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "not valid JSON")
            return 400, f"malformed JSON body ({detail}); send a JSON object such as {example}"
    messages: dict[str, str] = {}
    for error in errors:
        kind, loc = error.get("type", ""), tuple(error.get("loc", ()))
        where = _where(loc)
        if kind == "extra_forbidden":
            text = f"unknown field '{loc[-1]}' (allowed: {', '.join(fields)})"
        elif kind == "missing" and where == "body":
            text = f"request body is missing (send a JSON object, e.g. {example})"
        elif kind == "missing":
            text = f"{where} is missing (send a JSON object such as {example})"
        elif len(loc) > 1 and loc[1] == "seeds":  # one error per branch of list | str: keep the first
            where, kind, item = "seeds", "", isinstance(loc[-1], int)  # item: one bad entry of a list
            text = (f"seeds[{loc[-1]}]: {error.get('msg', 'invalid value')} (got {error.get('input')!r})" if item else
                    f"seeds: must be a list of seeds 0..{MAX_SEED} or a string such as \"0-3,7\" (got {error.get('input')!r})")
        elif loc and loc[-1] in ("int", "str"):  # one error per branch of int | str
            kind = "union"
            holds = INT_OR_STR.get(where, "a class index (integer) or a class name (string)")
            text = f"{where}: must be {holds} (got {error.get('input')!r})"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            text = f"request body must be a JSON object (e.g. {example})"
        else:
            text = f"{where}: {error.get('msg', 'invalid value')}"
            if "input" in error and not isinstance(error["input"], (dict, list)):
                text += f" (got {error['input']!r})"
        messages.setdefault(where + kind, text)  # a union gives one error per branch: keep one
    return 422, "; ".join(messages.values())


__all__ = [
    "EditInfo",
    "ErrorResponse",
    "GenerateRequest",
    "GenerateResponse",
    "GeneratedImage",
    "HealthResponse",
    "ModelResponse",
    "TranslateForm",
    "TranslateRequest",
    "TranslateResponse",
    "TranslatorInfo",
    "TranslatorsResponse",
    "describe_validation_errors",
]
