"""Machine facts every benchmark records with its figures: CPU model, bf16/AMX flags, load, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Any


def machine_facts() -> dict[str, Any]:
    import torch

    from distilgan.train.precision import cpu_bf16_flags

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return {"cpu": model, "bf16_flags": cpu_bf16_flags(), "amx_tile": "amx_tile" in lscpu, "amx_int8": "amx_int8" in lscpu,
            "cpu_count": os.cpu_count(),
            # oneDNN's ISA cap: AVX512_CORE_BF16 on an AMX machine stands in for a CPU without AMX
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset"), "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
            "torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
