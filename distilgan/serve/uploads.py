"""Images in and out of the HTTP API: an uploaded file checked and decoded for a translator, and PNG
encoding.

An upload is untrusted bytes, so the checks go from cheap to costly: its size in bytes, then the
format and the pixel count from the header alone, and only then the decode (a 30 KB PNG can declare
a 50,000 x 50,000 image). Only PNG and JPEG are opened: each decoder PIL runs is attack surface, and
these two are what cameras, browsers and ``distilgan generate`` write. The decoded image goes
through ``utils.images.fit_pil`` with ``resize=True``, the function ``ImageTranslator.translate`` uses,
so the server translates exactly what the Python API would.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from distilgan.serve.http import ApiError

DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_UPLOAD_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG")
# What a damaged or hostile file makes PIL raise while reading it: struct.error and IndexError come
# from its header parsers reading past a short buffer, zlib.error from a broken compressed stream.
# Anything else is a server bug and goes to the 500 handler.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error,
)


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded image may be: ``max_bytes`` of file, ``max_pixels`` (width x height)."""

    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS

    def body_bytes(self) -> int:
        """The request-body limit that lets such an image through as base64 JSON (4 characters per 3
        bytes) or multipart, with room for the other fields; the image itself is checked exactly after."""
        return -(-self.max_bytes // 3) * 4 + 64 * 1024


@dataclass
class Upload:
    """An uploaded image as the model takes it, and what was done to get there."""

    array: np.ndarray  # uint8 (resolution, resolution, channels)
    format: str  # PNG or JPEG
    width: int  # as uploaded
    height: int
    mode: str  # PIL mode as uploaded: RGB, RGBA, L, P, CMYK ...
    resized: bool
    converted: str | None  # "RGBA->RGB" when the mode changed in a way that loses or adds anything
    notes: list[str] = field(default_factory=list)  # the same facts in words, for people


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def decode_upload(data: bytes, limits: UploadLimits, resolution: int, channels: int) -> Upload:
    """Bytes of a PNG or JPEG file -> the model's input; ApiError 413 (too large), 415 (not a PNG or
    JPEG) or 422 (empty, damaged or truncated)."""
    from PIL import Image

    from distilgan.utils.images import fit_pil

    if not data:
        raise ApiError(422, "the image is empty (0 bytes); send a PNG or JPEG file")
    if len(data) > limits.max_bytes:
        raise ApiError(413, f"the image is {len(data)} bytes; this server takes at most {limits.max_bytes} "
                            "(send a smaller file, or start the server with a larger --max-upload-bytes)")
    too_many = ("this server takes at most {max} pixels (send a smaller image, or start the server with a "
                "larger --max-upload-pixels)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise ApiError(415, "the upload is not a PNG or JPEG image (send a .png or .jpg file)") from None
    except Image.DecompressionBombError as err:  # PIL's own ceiling, when --max-upload-pixels is above it
        raise ApiError(413, f"the image has too many pixels ({_first_line(err)}); "
                            + too_many.format(max=limits.max_pixels)) from None
    except DECODE_ERRORS as err:
        raise ApiError(422, f"cannot read the image header: {_first_line(err)} (send a whole PNG or JPEG file)") from None
    with image:
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ApiError(413, f"the image is {width}x{height} = {width * height} pixels; " + too_many.format(max=limits.max_pixels))
        try:
            image.load()  # a truncated file passes the header; this is where it fails
        except DECODE_ERRORS as err:
            raise ApiError(422, f"cannot decode the {image.format} image: {_first_line(err)} "
                                "(the file is truncated or damaged; send the whole file)") from None
        mode, kind = image.mode, image.format or "image"
        wanted = "L" if channels == 1 else "RGB"
        try:
            array = fit_pil(image, resolution, channels, resize=True, where="the image")
        except DECODE_ERRORS as err:  # a mode PIL cannot convert (e.g. a 16-bit one to RGB)
            raise ApiError(422, f"cannot convert the {mode} image to {wanted}: {_first_line(err)} "
                                "(send an 8-bit RGB or grayscale PNG or JPEG)") from None
    resized = (width, height) != (resolution, resolution)
    # a palette without transparency converts exactly, as the translate command also counts it
    converted = None if mode in (wanted, "P") or (mode == "1" and wanted == "L") else f"{mode}->{wanted}"
    notes = []
    if resized:
        how = "area" if width >= resolution and height >= resolution else "bicubic"
        notes.append(f"resized {width}x{height} to {resolution}x{resolution} ({how}"
                     f"{'; not square, so stretched' if width != height else ''})")
    if converted:
        notes.append(f"converted {mode} to {wanted}{' (alpha dropped)' if 'A' in mode else ''}")
    return Upload(array, kind, width, height, mode, resized, converted, notes)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, C) with C 1 or 3 -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_UPLOAD_PIXELS", "Upload", "UploadLimits", "decode_upload", "encode_png"]
