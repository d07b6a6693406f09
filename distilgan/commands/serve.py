"""``distilgan serve``: a local web page and JSON API that generate images with a trained student and
translate uploaded images with image-to-image students (``--translator``, repeatable).

Translators have their own option rather than being detected behind ``--checkpoint``: ``--checkpoint``
names *the* generator that ``/generate`` and ``/model`` describe, while translators are named models
of another kind that ``/translate`` chooses between, several at once. A translator given as
``--checkpoint`` is still recognised, and the error names the option to use.

The models are loaded once at start-up (once per worker process with --workers N). SIGINT/SIGTERM
stop accepting connections, let in-flight requests finish (up to --graceful-timeout seconds) and
exit 0. The listening socket is bound here before uvicorn starts, so a busy port is a one-line
error and ``--port 0`` picks a free port (printed in the "serving on" line).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from distilgan.errors import UserError
from distilgan.utils import argtypes

if TYPE_CHECKING:  # the server's types only: fastapi is imported when serving, not for --help
    from distilgan.serve.backend import Backend, ServedTranslator

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a web page and JSON API that generate images and translate uploaded ones",
        description=(
            "Serve a trained student over HTTP: a page at / to pick classes and download images, "
            "POST /generate (JSON in, a PNG grid or base64 PNGs out), GET /health, GET /model, and the "
            "API schema at /openapi.json with a local docs page at /docs. With --translator: a Translate tab, "
            "POST /translate (an uploaded image and an edit in, the edited image out) and GET /translators. "
            "The models are loaded once at start-up; Ctrl+C or SIGTERM finishes in-flight requests before exiting."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", metavar="CKPT", help="checkpoint folder (config.json + model.safetensors) or built-in name")
    source.add_argument("--model", metavar="DIR", help="exported model folder (from distilgan export) for --backend openvino|onnxruntime")
    parser.add_argument("--translator", action="append", default=[], metavar="[NAME=]DIR",
                        help="image-to-image translator to serve at POST /translate: a checkpoint (run with torch), or "
                             "an export from distilgan export (its folder, .onnx, or .xml; run with onnxruntime or "
                             "openvino, no torch); repeatable, with or without a generator; NAME defaults to the "
                             "folder's name, the run's for RUN/generator, a file's stem")
    # None: serve.uploads.UploadLimits' defaults (not imported here: --help must not need fastapi)
    parser.add_argument("--max-upload-bytes", type=argtypes.positive_int, default=None, metavar="N",
                        help="largest image file /translate takes, in bytes (default 8388608, 8 MiB)")
    parser.add_argument("--max-upload-pixels", type=argtypes.positive_int, default=None, metavar="N",
                        help="most pixels (width x height) an uploaded image may have (default 16777216, 4096x4096)")
    parser.add_argument("--backend", default="torch", choices=("torch", "openvino", "onnxruntime"), help="inference backend: torch runs a checkpoint; openvino and onnxruntime run an exported model folder without PyTorch (default torch)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=argtypes.port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-count", type=argtypes.positive_int, default=64, metavar="N", help="most images one request may ask for (default 64)")
    parser.add_argument("--workers", type=argtypes.positive_int, default=1, metavar="N", help="server processes, each with its own copy of the model (default 1)")
    parser.add_argument("--graceful-timeout", type=argtypes.positive_float, default=30.0, metavar="S", help="seconds in-flight requests get to finish on shutdown (default 30)")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="server log level (default info)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    parser.set_defaults(func=run)


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (IPv4, or IPv6 when host contains ':'), or a one-line UserError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        hint = "pick another with --port, or stop the other server" if err.errno in (98, 48) else "check --host"
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err} ({hint})") from None
    sock.listen(2048)  # connections queue from now on, so "serving on" is true when printed
    sock.set_inheritable(True)
    return sock


def _check_arguments(args: argparse.Namespace) -> None:
    if not (args.checkpoint or args.model or args.translator):
        raise UserError("nothing to serve: give a generator (--checkpoint CKPT, or --model DIR for an export) "
                        "and/or one or more --translator DIR")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.max_count < 1:
        raise UserError(f"--max-count must be >= 1, got {args.max_count}")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.graceful_timeout <= 0:
        raise UserError(f"--graceful-timeout must be > 0, got {args.graceful_timeout}")
    for option, value in (("--max-upload-bytes", args.max_upload_bytes), ("--max-upload-pixels", args.max_upload_pixels)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be >= 1, got {value}")
    if args.workers > 1 and args.device != "cpu":
        raise UserError("--workers > 1 runs one model copy per process; use it with --device cpu (one process per GPU is enough)")


def _check_sources(args: argparse.Namespace) -> None:
    """A model given to the wrong option (a translator where the generator goes, an export to torch):
    one line naming the option it belongs to."""
    from distilgan.deploy import TRANSLATOR
    from distilgan.serve.backend import exported_kind, translator_architecture

    source, option = (args.checkpoint, "--checkpoint") if args.checkpoint else (args.model, "--model")
    if not source:
        return
    exported = exported_kind(source)
    if exported is not None and exported[0] == TRANSLATOR:
        raise UserError(f"{option} {source} holds an exported translator (an image translator, not a generator): "
                        f"serve it with --translator {source}")
    if exported is not None and args.backend == "torch":
        raise UserError(f"{option} {source} is an exported generator, which torch does not run: "
                        f"serve it with --model {source} --backend {exported[1]}")
    if exported is None and args.backend == "torch":
        architecture = translator_architecture(source)
        if architecture:
            raise UserError(f"{option} {source} holds a {architecture} (an image translator, not a generator): "
                            f"serve it with --translator {source}")


def _runs_on(facts: dict[str, Any], device: str) -> str:
    """The backend, an export's precision and the device, e.g. 'onnxruntime (int8) on cpu'."""
    precision = f" ({facts['precision']})" if facts.get("precision") else ""
    return f"{facts.get('backend', '?')}{precision} on {facts.get('device', device)}"


def _describe(backend: Backend | None, translators: list[ServedTranslator], args: argparse.Namespace) -> list[str]:
    """The start-up lines: one per model."""
    from distilgan.utils.latent import model_classes, model_z_distribution

    lines = []
    if backend is not None:
        facts = backend.describe()
        trained = model_classes(backend)  # the classes requests may ask for, in the model's order
        classes = ", ".join(backend.class_names[c] for c in trained[:10]) + (" ..." if len(trained) > 10 else "")
        lines.append(
            f"distilgan serve: {facts.get('architecture', 'model')} {backend.resolution}x{backend.resolution} "
            f"({len(trained)} classes: {classes}; z {model_z_distribution(backend).describe()}) "
            f"with {_runs_on({'backend': backend.name, **facts}, args.device)}, "
            f"{args.workers} worker(s), at most {args.max_count} images per request"
        )
    for translator in translators:
        facts = translator.describe()
        edits = ", ".join(translator.edits[:10]) + (" ..." if len(translator.edits) > 10 else "")
        lines.append(
            f"distilgan serve: translator '{translator.model_name}': {facts['architecture']} "
            f"{translator.resolution}x{translator.resolution} ({len(translator.edits)} edit(s): {edits}) "
            f"with {_runs_on(facts, args.device)}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    from distilgan.utils.extras import need

    for module in ("fastapi", "uvicorn", "pydantic") + (("python_multipart",) if args.translator else ()):
        need(module, "distilgan serve")
    import uvicorn

    from distilgan.serve.app import SETTINGS_ENV, create_app
    from distilgan.serve.backend import load_backend, load_translators
    from distilgan.serve.uploads import UploadLimits

    _check_sources(args)
    checkpoint = args.checkpoint or args.model
    backend = load_backend(args.backend, checkpoint, device=args.device) if checkpoint else None
    translators = load_translators(args.translator, device=args.device)
    given = {"max_bytes": args.max_upload_bytes, "max_pixels": args.max_upload_pixels}
    limits = UploadLimits(**{key: value for key, value in given.items() if value is not None})
    app = create_app(backend, max_count=args.max_count, translators=translators, limits=limits) if args.workers == 1 else None
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    config_options = {
        "log_level": args.log_level,
        "access_log": not args.no_access_log,
        "timeout_graceful_shutdown": args.graceful_timeout,
        "lifespan": "off",
    }
    uploads = f", uploads up to {limits.max_bytes} bytes and {limits.max_pixels} pixels" if translators else ""
    print(
        "\n".join(_describe(backend, translators, args))
        + f"\nserving on http://{shown_host}:{port} (page /, API docs /docs{uploads}); Ctrl+C to stop",
        flush=True,
    )

    if app is not None:
        server = _graceful_server(uvicorn.Config(app, **config_options))
        server.run(sockets=[sock])
        stopped = f" by {signal.Signals(server.stop_signal).name}" if server.stop_signal else ""
        served = app.state.service.requests_served if app.state.service else 0
        translated = f" and {app.state.translation.requests_served} translate request(s)" if app.state.translation else ""
        print(f"distilgan serve: stopped{stopped} after {served} generate request(s){translated}", flush=True)
        return 0 if server.started else 1

    # Several processes: each loads the models itself from the settings in the environment.
    from uvicorn.supervisors import Multiprocess

    del backend, translators
    os.environ[SETTINGS_ENV] = json.dumps(
        {
            "checkpoint": str(checkpoint) if checkpoint else None,
            "backend": args.backend,
            "device": args.device,
            "max_count": args.max_count,
            "translators": args.translator,
            "upload_limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels},
            "threads": max(1, (os.cpu_count() or 1) // args.workers),  # no oversubscription
        }
    )
    config = uvicorn.Config("distilgan.serve.app:app_from_env", factory=True, workers=args.workers, **config_options)
    Multiprocess(config, sockets=[sock]).run()
    print("distilgan serve: stopped", flush=True)
    return 0


def _graceful_server(config: object) -> object:
    """uvicorn's server, minus re-raising the stop signal after its graceful shutdown, so that
    SIGTERM/SIGINT end ``distilgan serve`` with exit code 0 and a last line."""
    import uvicorn

    import contextlib
    import threading

    class GracefulServer(uvicorn.Server):
        stop_signal: int | None = None

        def handle_exit(self, sig: int, frame: object) -> None:
            self.stop_signal = sig
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]
            # uvicorn's own version re-raises the captured signal once the server has stopped
            # (killing us with it); ours installs the same handlers and only restores the old ones.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)  # type: ignore[arg-type]


__all__ = ["add_parser", "bind_socket", "run"]
