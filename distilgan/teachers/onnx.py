"""``onnx:PATH`` — a generator exported to ONNX, run with onnxruntime.

What is discovered from the graph (each can be given as an option when discovery fails):

* latent input ``z_input``: the float input of rank 2; its last dim is ``z_dim``;
* label input ``label_input``: an int32/int64 input of rank 1 (integer labels) or the other float
  rank-2 input (one-hot, ``num_classes`` = its last dim); with integer labels ``num_classes`` comes
  from the model's metadata (``num_classes``), from the embedding table the labels index, or the
  option; a graph with no label input is treated as a one-class teacher;
* image ``output``: the float rank-4 output, NCHW, or NHWC when its last dim is 1 or 3 (option
  ``layout`` forces either); resolution and channels from its shape, or one probe batch when dynamic.

Graphs exported with a fixed batch size are fed in chunks of that size, the last one padded.
Model metadata keys ``class_names`` (JSON list), ``z_dim``, ``num_classes``, ``resolution`` are used
when present.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from distilgan.errors import UserError
from distilgan.teachers.base import Teacher, require_file
from distilgan.teachers.adapter import apply_common, pick, take_options
from distilgan.utils.hashing import sha256_file
from distilgan.utils.extras import need

FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
Z_HINTS = ("z", "latent", "noise")
LABEL_HINTS = ("label", "class", "c", "y", "cond")


def _static(dim: Any) -> int | None:
    """An ONNX dim as int, or None when symbolic / unknown."""
    return int(dim) if isinstance(dim, int) and dim > 0 else None


def _hinted(name: str, hints: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return lowered in hints or any(lowered.startswith(h) and len(h) > 1 for h in hints)


def _embedding_rows(path: str, label_name: str) -> int | None:
    """Rows of the initializer table a Gather indexes with the label input (an nn.Embedding)."""
    onnx = need("onnx")

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - discovery is best effort; the caller asks for the option
        return None
    tables = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == label_name:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = tables.get(node.input[0])
            if dims and axis == 0:
                return int(dims[0])
    return None


class OnnxTeacher(Teacher):
    def __init__(self, path: str, opts: dict[str, Any]) -> None:
        ort = need("onnxruntime")

        self.path = str(require_file(path, "ONNX teacher file"))
        self.batch_size = int(opts["batch_size"])
        self._fingerprint: str | None = None
        self.session = self._session(ort, self.path, opts)
        spec = f"onnx:{path}"
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.z_input, self.label_input, self.label_encoding = self._find_inputs(inputs, opts, spec)
        z_arg = inputs[self.z_input]
        self.z_dtype = FLOAT_TYPES[z_arg.type]
        self.z_dim = pick(_static(z_arg.shape[-1]), opts["z_dim"] or meta.get("z_dim"), "z_dim", spec)  # type: ignore[assignment]
        if self.z_dim is None:
            raise UserError(f"{spec}: the latent input '{self.z_input}' has a dynamic size (give z_dim=...)")
        self.fixed_batch = _static(z_arg.shape[0]) if z_arg.shape else None
        self.label_dtype: Any = np.int64
        if self.label_input is None:
            self.num_classes = 1
            if opts["num_classes"] not in (None, 1):
                raise UserError(f"{spec} has no label input, so it has one class; drop num_classes")
        else:
            label_arg = inputs[self.label_input]
            self.label_dtype = {**FLOAT_TYPES, **INT_TYPES}[label_arg.type]
            found = _static(label_arg.shape[-1]) if self.label_encoding == "onehot" else None
            if found is None and self.label_encoding == "int":
                found = _embedding_rows(self.path, self.label_input)
            given = opts["num_classes"] or meta.get("num_classes")
            self.num_classes = pick(found, given, "num_classes", spec)  # type: ignore[assignment]
            if self.num_classes is None:
                raise UserError(f"{spec}: cannot tell how many classes the teacher has (give num_classes=...)")
        self.output, self.layout = self._find_output(opts, spec)
        self.channels, self.resolution = self._find_image_size(opts, meta, spec)
        if "class_names" in meta:
            try:
                self.class_names = [str(n) for n in json.loads(meta["class_names"])]
            except (ValueError, TypeError):
                self.class_names = None
        apply_common(self, opts)

    @staticmethod
    def _session(ort: Any, path: str, opts: dict[str, Any]) -> Any:
        providers = ["CPUExecutionProvider"]
        if opts["device"].startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                device_id = int(opts["device"].partition(":")[2] or 0)
                providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
            else:
                print("distilgan: onnxruntime has no CUDA provider here; running the ONNX teacher on CPU "
                      "(install onnxruntime-gpu for CUDA)", file=sys.stderr)
        session_options = ort.SessionOptions()
        if opts["threads"]:
            session_options.intra_op_num_threads = int(opts["threads"])
        session_options.log_severity_level = 3  # keep onnxruntime's warnings off the user's console
        try:
            return ort.InferenceSession(path, session_options, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            message = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise UserError(f"onnxruntime cannot load {path}: {message} (is it an ONNX model?)") from None

    def _find_inputs(self, inputs: dict[str, Any], opts: dict[str, Any], spec: str) -> tuple[str, str | None, str]:
        for option in ("z_input", "label_input"):
            if opts[option] is not None and opts[option] not in inputs:
                raise UserError(f"{spec} has no input '{opts[option]}' (its inputs: {', '.join(inputs)})")
        floats2 = [n for n, a in inputs.items() if a.type in FLOAT_TYPES and len(a.shape) == 2]
        ints1 = [n for n, a in inputs.items() if a.type in INT_TYPES and len(a.shape) == 1]
        z_name = opts["z_input"]
        if z_name is None:
            candidates = [n for n in floats2 if n != opts["label_input"]]
            if len(candidates) > 1:  # z and a one-hot label: decide by name, then by the sizes given
                by_name = [n for n in candidates if _hinted(n, Z_HINTS)]
                by_size = [n for n in candidates if opts["z_dim"] and inputs[n].shape[-1] == opts["z_dim"]]
                candidates = by_name if len(by_name) == 1 else by_size
            if len(candidates) != 1:
                raise UserError(
                    f"{spec}: cannot tell which input is the latent z among {', '.join(inputs)} "
                    "(give z_input=NAME)"
                )
            z_name = candidates[0]
        label_name = opts["label_input"]
        if label_name is None:
            others = [n for n in ints1 + floats2 if n != z_name]
            if len(others) > 1:
                hinted = [n for n in others if _hinted(n, LABEL_HINTS)]
                others = hinted if len(hinted) == 1 else others
            if len(others) > 1:
                raise UserError(f"{spec}: cannot tell which input is the label among {', '.join(others)} (give label_input=NAME)")
            label_name = others[0] if others else None
        leftover = [n for n in inputs if n not in (z_name, label_name)]
        if leftover:
            raise UserError(f"{spec} has inputs distilgan does not feed: {', '.join(leftover)} (export it with only z and labels)")
        if inputs[z_name].type not in FLOAT_TYPES or len(inputs[z_name].shape) != 2:
            raise UserError(f"{spec}: latent input '{z_name}' must be float of shape (N, z_dim)")
        encoding = "int"
        if label_name is not None:
            arg = inputs[label_name]
            if arg.type in INT_TYPES and len(arg.shape) == 1:
                encoding = "int"
            elif arg.type in FLOAT_TYPES and len(arg.shape) == 2:
                encoding = "onehot"
            else:
                raise UserError(
                    f"{spec}: label input '{label_name}' is {arg.type} {arg.shape}; expected int (N,) or one-hot float (N, classes)"
                )
            if opts["label_encoding"] not in (None, encoding):
                raise UserError(
                    f"{spec}: label_encoding={opts['label_encoding']} but input '{label_name}' is {arg.type} of rank "
                    f"{len(arg.shape)}, i.e. {encoding} labels (drop the option)"
                )
        return z_name, label_name, encoding

    def _find_output(self, opts: dict[str, Any], spec: str) -> tuple[str, str]:
        outputs = {o.name: o for o in self.session.get_outputs()}
        name = opts["output"]
        if name is None:
            images = [n for n, o in outputs.items() if o.type in FLOAT_TYPES and len(o.shape) == 4]
            if len(images) != 1:
                raise UserError(
                    f"{spec}: cannot tell which output is the image among {', '.join(outputs)} (give output=NAME)"
                )
            name = images[0]
        elif name not in outputs:
            raise UserError(f"{spec} has no output '{name}' (its outputs: {', '.join(outputs)})")
        layout = opts["layout"]
        if layout not in (None, "nchw", "nhwc"):
            raise UserError(f"layout must be nchw or nhwc, got '{layout}'")
        if layout is None:
            shape = outputs[name].shape
            c_first = _static(shape[1]) if len(shape) == 4 else None
            c_last = _static(shape[3]) if len(shape) == 4 else None
            layout = "nhwc" if c_last in (1, 3) and c_first not in (1, 3) and c_first is not None else "nchw"
            if c_first is None and c_last is None:
                layout = "probe"
        return name, layout

    def _find_image_size(self, opts: dict[str, Any], meta: dict[str, str], spec: str) -> tuple[int, int]:
        shape = self.session.get_outputs()[[o.name for o in self.session.get_outputs()].index(self.output)].shape
        dims = [_static(d) for d in shape]
        if self.layout == "probe" or any(d is None for d in dims[1:]):
            probe = self._run(np.zeros((1, self.z_dim), np.float32), np.zeros(1, np.int64), convert=False)
            dims = list(probe.shape)
            if self.layout == "probe":
                self.layout = "nhwc" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "nchw"
        if len(dims) != 4:
            raise UserError(f"{spec}: image output '{self.output}' has shape {shape}, expected rank 4")
        channels, height, width = (dims[1], dims[2], dims[3]) if self.layout == "nchw" else (dims[3], dims[1], dims[2])
        if height != width:
            raise UserError(f"{spec}: images are {height}x{width}; only square images are supported")
        resolution = pick(height, opts["resolution"] or meta.get("resolution"), "resolution", spec)
        return int(channels), int(resolution)  # type: ignore[arg-type]

    def _feed(self, z: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        feed = {self.z_input: z.astype(self.z_dtype, copy=False)}
        if self.label_input is not None:
            if self.label_encoding == "onehot":
                feed[self.label_input] = np.eye(self.num_classes, dtype=self.label_dtype)[labels]
            else:
                feed[self.label_input] = labels.astype(self.label_dtype, copy=False)
        return feed

    def _run(self, z: np.ndarray, labels: np.ndarray, convert: bool = True) -> np.ndarray:
        """One session call, padding a short batch up to a fixed graph batch size."""
        n = len(z)
        if self.fixed_batch is not None and n < self.fixed_batch:
            pad = self.fixed_batch - n
            z = np.concatenate([z, np.repeat(z[-1:], pad, axis=0)])
            labels = np.concatenate([labels, np.repeat(labels[-1:], pad)])
        out = self.session.run([self.output], self._feed(z, labels))[0][:n]
        if convert and self.layout == "nhwc":
            out = np.transpose(out, (0, 3, 1, 2))
        return out

    def _generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._in_batches(z, labels, self.fixed_batch or self.batch_size, self._run)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = sha256_file(self.path)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["onnx"] = {"z_input": self.z_input, "label_input": self.label_input, "output": self.output,
                        "label_encoding": self.label_encoding, "layout": self.layout, "fixed_batch": self.fixed_batch}
        return info


def load(location: str, **options: Any) -> Teacher:
    """Options: the common ones, plus ``z_input``, ``label_input``, ``output`` (names in the graph),
    ``label_encoding`` (int|onehot), ``num_classes``, ``z_dim``, ``resolution``, ``layout``
    (nchw|nhwc), ``batch_size`` (default 256, for dynamic-batch graphs), ``threads`` (CPU threads)."""
    opts = take_options(
        options,
        "onnx",
        {"z_input": None, "label_input": None, "output": None, "label_encoding": None, "num_classes": None,
         "z_dim": None, "resolution": None, "layout": None, "batch_size": 256, "threads": 0},
    )
    if int(opts["batch_size"]) < 1:
        raise UserError(f"batch_size must be >= 1, got {opts['batch_size']}")
    if opts["label_encoding"] not in (None, "int", "onehot"):
        raise UserError(f"label_encoding must be int or onehot, got '{opts['label_encoding']}'")
    return OnnxTeacher(location, opts)
