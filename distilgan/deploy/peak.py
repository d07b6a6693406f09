"""The machine's measured peak rates, the physical reference of ``distilgan bench``.

Dense micro-benchmarks: a stack of four 256->256 3x3 convolutions on 16x16 maps at batch 64 (the
DiStyleGAN student's own layer shape) in torch FP32, OpenVINO FP32 and OpenVINO INT8 (NNCF-quantised),
plus a torch FP32 1024^3 matmul. Each benchmarked variant's achieved rate (2 * MACs * images/s) is
given as a fraction of the peak of its arithmetic.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from distilgan.deploy.bench import time_fn


def _peak_conv_model() -> Any:
    import torch

    return torch.nn.Sequential(*[torch.nn.Conv2d(256, 256, 3, 1, 1, bias=False) for _ in range(4)]).eval()


def peak_rates(threads: int, repeats: int = 10) -> dict[str, Any]:
    """Measured dense rates of this machine: torch FP32 (matmul, conv), OpenVINO FP32 and INT8 conv."""
    import torch

    torch.set_num_threads(threads)
    result: dict[str, Any] = {"threads": threads, "conv_workload": "4 x conv3x3 256->256 on 16x16, batch 64"}
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    t = time_fn(lambda: a @ b, 2, repeats)
    result["torch_fp32_matmul_gflops"] = 2 * 1024**3 / t["median_ms"] / 1e6
    model = _peak_conv_model()
    x = torch.randn(64, 256, 16, 16)
    ops = 2 * 4 * 64 * 16 * 16 * 256 * 256 * 9  # 2 ops per MAC
    with torch.inference_mode():
        t = time_fn(lambda: model(x), 2, repeats)
    result["torch_fp32_conv_gflops"] = ops / t["median_ms"] / 1e6
    try:
        import nncf
        import openvino as ov
    except ImportError:
        return result
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "conv.onnx"
        torch.onnx.export(model, (x[:1],), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
        fp32 = ov.convert_model(str(path))
    calibration = [np.random.default_rng(i).standard_normal((1, 256, 16, 16), dtype=np.float32) for i in range(8)]
    nncf.set_log_level(logging.WARNING)
    int8 = nncf.quantize(fp32, nncf.Dataset(calibration), subset_size=8)
    core = ov.Core()
    feed = x.numpy()
    for name, ov_model in (("openvino_fp32_conv_gflops", fp32), ("openvino_int8_conv_gops", int8)):
        ov_model.reshape({0: list(feed.shape)})
        request = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        t = time_fn(lambda: request.infer([feed]), 2, repeats)
        result[name] = ops / t["median_ms"] / 1e6
    result["peak_fp32_gflops"] = max(result["torch_fp32_matmul_gflops"], result["torch_fp32_conv_gflops"], result["openvino_fp32_conv_gflops"])
    result["peak_int8_gops"] = result["openvino_int8_conv_gops"]
    return result
