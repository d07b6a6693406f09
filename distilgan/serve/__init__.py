"""``distilgan serve``: a web page and JSON API for class-conditional generation.

    from distilgan.serve import create_app, load_backend
    app = create_app(load_backend("torch", "runs/cifar10/generator"), max_count=64)

``backend.py`` holds the backend interface (``generate(z, labels) -> uint8 NHWC``), ``app.py`` the
FastAPI app, ``schemas.py`` the request/response shapes, ``docs.py`` the local API docs page and
``static/`` the page itself. FastAPI is imported here, so import this package only when serving.
"""

from distilgan.serve.app import create_app
from distilgan.serve.backend import Backend, TorchBackend, load_backend

__all__ = ["Backend", "TorchBackend", "create_app", "load_backend"]
