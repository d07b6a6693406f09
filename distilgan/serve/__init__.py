"""``distilgan serve``: a web page and JSON API for class-conditional generation and image-to-image edits.

    from distilgan.serve import create_app, load_backend, load_translators
    app = create_app(load_backend("torch", "runs/cifar10/generator"), max_count=64,
                     translators=load_translators(["runs/car2truck/generator"]))

``backend.py`` holds the backend interface (``generate(z, labels) -> uint8 NHWC``) and the translator
backends (a checkpoint run with torch, an export with onnxruntime or OpenVINO), ``app.py`` the FastAPI
app, ``translate.py`` the translation endpoints, ``uploads.py`` the checks and decoding of uploaded images, ``http.py`` the error shape and body limit, ``schemas.py`` the
request/response shapes, ``docs.py`` the local API docs page and ``static/`` the page itself. FastAPI
is imported here, so import this package only when serving.
"""

from distilgan.serve.app import create_app
from distilgan.serve.backend import (
    Backend, ExportedTranslatorBackend, ServedTranslator, TorchBackend, TranslatorBackend, load_backend, load_translators,
)
from distilgan.serve.uploads import UploadLimits

__all__ = ["Backend", "ExportedTranslatorBackend", "ServedTranslator", "TorchBackend", "TranslatorBackend", "UploadLimits",
           "create_app", "load_backend", "load_translators"]
