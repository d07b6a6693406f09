"""Issue 24: the edges a new user hits, over every command.

Each case runs ``distilgan.cli.main`` in-process and must end with exit code 2, exactly one line on
stderr (no traceback) and nothing written: a bad output place, a bad number, an unknown option or an
option that does not apply to the chosen mode is refused before any model, dataset or teacher is
loaded. So the models and datasets named here need not exist (``cifar10-student`` is shipped, the
rest are dummies), and the whole file runs in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from distilgan.cli import build_parser, main

# -- the places used by every case (made by the `place` fixture) --------------------------------------
# blocker: an existing file; folder: an existing empty folder; run: an existing folder (gif's RUN);
# ro: a folder we may not write (0o500); new: a path that does not exist.


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2), sigma=np.eye(2))  # a reference statistics file
    monkeypatch.chdir(tmp_path)  # default output folders (exports/, calibrated-...) would land here
    yield tmp_path
    (tmp_path / "ro").chmod(0o700)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(root: Path, capsys: pytest.CaptureFixture, argv: list[str], *fragments: str) -> str:
    """Run ``distilgan ARGV``; assert the one-line refusal and that nothing under ``root`` changed."""
    before = _snapshot(root)
    code = main([str(a).format(tmp=root) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and err.count("\n") == 1, err
    assert lines[0].startswith("distilgan: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment.format(tmp=root) in lines[0], lines[0]
    assert _snapshot(root) == before, "a refused command left output behind"
    return lines[0]


# -- 1. output places -------------------------------------------------------------------------------
# (command argv before the output option, the option, "dir" or "file", suffix of a file output)
WRITERS = {
    "sample": (["sample", "--teacher", "builtin:toy", "--per-class", "2"], "--out", "dir", ""),
    "distill": (["distill", "--data", "nowhere"], "--out", "dir", ""),
    "generate-folder": (["generate", "--checkpoint", "cifar10-student"], "--out", "dir", ""),
    "generate-grid": (["generate", "--checkpoint", "cifar10-student"], "--out", "file", ".png"),
    "generate-npz": (["generate", "--checkpoint", "cifar10-student"], "--out", "file", ".npz"),
    "gif": (["gif", "{tmp}/run"], "--out", "file", ".gif"),
    "stats": (["stats", "cifar10"], "--out", "file", ".npz"),
    "eval": (["eval", "--images", "nowhere.npz", "--ref", "cifar10"], "--json", "file", ".json"),
    "tsne": (["tsne", "--images", "nowhere.npz"], "--out", "file", ".png"),
    "tsne-scatter": (["tsne", "--images", "nowhere.npz", "--out", "{tmp}/new.png"], "--scatter", "file", ".png"),
    "export": (["export", "--checkpoint", "cifar10-student"], "--out", "dir", ""),
    "qat": (["qat", "--checkpoint", "cifar10-student"], "--out", "dir", ""),
    "qat-finetune": (["qat", "--checkpoint", "cifar10-student", "--out", "{tmp}/new"], "--finetune-out", "dir", ""),
    "prune": (["prune", "--checkpoint", "cifar10-student"], "--out", "dir", ""),
    "prune-finetune": (["prune", "--checkpoint", "cifar10-student", "--out", "{tmp}/new"], "--finetune-out", "dir", ""),
    "bench": (["bench", "--checkpoint", "cifar10-student"], "--json", "file", ".json"),
    "train-classifier": (["train-classifier", "--model", "resnet20", "--data", "cifar10"], "--out", "dir", ""),
    "calibrate": (["calibrate", "--model", "resnet20", "--calibration", "noise"], "--out", "dir", ""),
    "train-teacher": (["train-teacher", "--data", "cifar10"], "--out", "dir", ""),
    "demo": (["demo"], "--out", "dir", ""),
    "pairs": (["pairs", "--teacher", "builtin:toy", "--edit", "cat:dog", "--per-edit", "2"], "--out", "dir", ""),
    "distill-i2i": (["distill-i2i", "--data", "nowhere"], "--out", "dir", ""),
    "train-encoder": (["train-encoder", "--data", "nowhere"], "--out", "dir", ""),
    "translate": (["translate", "--checkpoint", "nowhere", "--in", "nowhere.png"], "--out", "dir", ""),
    "invert": (["invert", "--teacher", "builtin:toy", "--in", "nowhere.png", "--label", "cat"], "--out", "dir", ""),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_output_under_an_existing_file(writer, place, capsys):
    argv, option, _, suffix = WRITERS[writer]
    target = f"{{tmp}}/blocker/deeper/out{suffix}"
    refused(place, capsys, [*argv, option, target], f"{option} {target}", "{tmp}/blocker is a file, not a folder",
            f"choose another {option}")


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_output_of_the_wrong_kind(writer, place, capsys):
    argv, option, kind, suffix = WRITERS[writer]
    if kind == "dir":  # an existing file where a folder is wanted
        refused(place, capsys, [*argv, option, "{tmp}/blocker"], f"{option} {{tmp}}/blocker is a", "file")
    else:  # an existing folder where a file is wanted
        (place / f"taken{suffix}").mkdir()
        refused(place, capsys, [*argv, option, f"{{tmp}}/taken{suffix}"], f"{option} {{tmp}}/taken{suffix} is a folder, not a file")


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_output_in_an_unwritable_folder(writer, place, capsys):
    if os.access(place / "ro", os.W_OK):
        pytest.skip("running as root: a 0o500 folder is still writable (the simulated case below covers it)")
    argv, option, _, suffix = WRITERS[writer]
    refused(place, capsys, [*argv, option, f"{{tmp}}/ro/out{suffix}"], "cannot write in {tmp}/ro (permission denied)")


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_output_in_an_unwritable_folder_simulated(writer, place, capsys, monkeypatch):
    """The same refusal where chmod cannot take write access away (root): os.access says no."""
    from distilgan.utils import paths

    monkeypatch.setattr(paths, "_writable", lambda folder: Path(folder).resolve() != (place / "ro").resolve())
    argv, option, _, suffix = WRITERS[writer]
    refused(place, capsys, [*argv, option, f"{{tmp}}/ro/out{suffix}"], "cannot write in {tmp}/ro (permission denied)",
            f"choose another {option}")


# -- 2. numbers checked by meaning, at parse time ---------------------------------------------------
OUT = "{tmp}/new"  # every writer gets a fresh output path: the snapshot proves it stays absent
BAD_NUMBERS = [
    # negative seeds
    (["sample", "--teacher", "builtin:toy", "--out", OUT, "--per-class", "2", "--seed", "-1"], "--seed must be >= 0"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["distill", "--data", "x", "--out", OUT, "--seed", "-3"], "--seed must be >= 0"),
    (["train-teacher", "--data", "x", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["eval", "--images", "x.npz", "--ref", "cifar10", "--seed", "-1"], "--seed must be >= 0"),
    (["tsne", "--images", "x.npz", "--out", "{tmp}/t.png", "--seed", "-1"], "--seed must be >= 0"),
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--calibration-seed", "-1"], "--calibration-seed must be >= 0"),
    (["qat", "--checkpoint", "cifar10-student", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["prune", "--checkpoint", "cifar10-student", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["train-classifier", "--model", "resnet20", "--data", "x", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["calibrate", "--model", "resnet20", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["demo", "--out", OUT, "--seed", "-1"], "--seed must be >= 0"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--seed", str(2**63)], "--seed must be < 2**63"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--seed", "abc"], "--seed must be a whole number"),
    # zero or negative counts, sizes, steps, batch sizes
    (["sample", "--teacher", "builtin:toy", "--out", OUT, "--per-class", "0"], "--per-class must be >= 1, got 0"),
    (["sample", "--teacher", "builtin:toy", "--out", OUT, "--per-class", "2", "--shard-size", "0"], "--shard-size must be >= 1"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--n", "0"], "--n must be >= 1, got 0"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--per-class", "-3"], "--per-class must be >= 1"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--batch-size", "0"], "--batch-size must be >= 1"),
    (["eval", "--images", "x.npz", "--ref", "cifar10", "--ref-n", "-5"], "--ref-n must be >= 2"),
    (["eval", "--images", "x.npz", "--ref", "cifar10", "--n", "1"], "--n must be >= 2"),
    (["stats", "cifar10", "--n", "0"], "--n must be >= 2"),
    (["distill", "--data", "x", "--out", OUT, "--batch-size", "0"], "--batch-size must be >= 1"),
    (["distill", "--data", "x", "--out", OUT, "--epochs", "-1"], "--epochs must be >= 1"),
    (["distill", "--data", "x", "--out", OUT, "--workers", "-1"], "--workers must be >= 0"),
    (["distill", "--data", "x", "--out", OUT, "--metric-n", "1"], "--metric-n must be >= 2"),
    (["train-teacher", "--data", "x", "--out", OUT, "--d-steps", "0"], "--d-steps must be >= 1"),
    (["train-teacher", "--data", "x", "--out", OUT, "--ckpt-keep", "0"], "--ckpt-keep must be >= 1"),
    (["tsne", "--images", "x.npz", "--out", "{tmp}/t.png", "--per-class", "0"], "--per-class must be >= 1"),
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--calibration-size", "0"], "--calibration-size must be >= 1"),
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--batch", "0"], "--batch must be 'dynamic' or an integer >= 1"),
    (["qat", "--checkpoint", "cifar10-student", "--out", OUT, "--steps", "-1"], "--steps must be >= 0"),
    (["qat", "--checkpoint", "cifar10-student", "--out", OUT, "--metric-n", "1"], "--metric-n must be >= 2"),
    (["prune", "--checkpoint", "cifar10-student", "--out", OUT, "--batch-size", "0"], "--batch-size must be >= 1"),
    (["bench", "--checkpoint", "cifar10-student", "--repeats", "0"], "--repeats must be >= 1"),
    (["bench", "--checkpoint", "cifar10-student", "--batch", "0,64"], "--batch must be a comma list of integers >= 1"),
    (["bench", "--checkpoint", "cifar10-student", "--fid-samples", "1"], "--fid-samples must be 0 (skip FID) or >= 2"),
    (["calibrate", "--model", "resnet20", "--out", OUT, "--size", "0"], "--size must be >= 1"),
    (["train-classifier", "--model", "resnet20", "--data", "x", "--out", OUT, "--epochs", "0"], "--epochs must be >= 1"),
    (["demo", "--out", OUT, "--steps", "0"], "--steps must be >= 1"),
    (["demo", "--out", OUT, "--batch-size", "1"], "--batch-size must be >= 2"),
    (["demo", "--out", OUT, "--eval-n", "1"], "--eval-n must be 0 (skip the check) or >= 2"),
    (["serve", "--checkpoint", "cifar10-student", "--max-count", "0"], "--max-count must be >= 1"),
    (["serve", "--checkpoint", "cifar10-student", "--workers", "0"], "--workers must be >= 1"),
    (["serve", "--checkpoint", "cifar10-student", "--port", "70000"], "--port must be in 0..65535"),
    (["gif", "{tmp}/run", "--fps", "0"], "--fps must be > 0"),
    (["pairs", "--teacher", "builtin:toy", "--edit", "cat:dog", "--out", OUT, "--per-edit", "0"], "--per-edit must be >= 1"),
    (["pairs", "--teacher", "builtin:toy", "--edit", "cat:dog", "--per-edit", "2", "--out", OUT, "--min-confidence", "-1"],
     "--min-confidence must be >= 0"),
    (["distill-i2i", "--data", "x", "--out", OUT, "--holdout", "-1"], "--holdout must be >= 0"),
    (["distill-i2i", "--data", "x", "--out", OUT, "--lambda-l1", "-1"], "--lambda-l1 must be >= 0"),
    (["train-encoder", "--data", "x", "--out", OUT, "--ndf", "0"], "--ndf must be >= 1"),
    (["translate", "--checkpoint", "c", "--in", "x.png", "--out", OUT, "--batch-size", "0"], "--batch-size must be >= 1"),
    (["invert", "--teacher", "t", "--in", "x.png", "--label", "0", "--out", OUT, "--steps", "-1"], "--steps must be >= 0"),
    (["invert", "--teacher", "t", "--in", "x.png", "--label", "0", "--out", OUT, "--lr", "0"], "--lr must be > 0"),
    # fractions out of range
    (["calibrate", "--model", "resnet20", "--calibration", "student", "--out", OUT, "--keep", "2"], "--keep must be a fraction in (0, 1]"),
    (["calibrate", "--model", "resnet20", "--calibration", "student", "--out", OUT, "--keep", "0"], "--keep must be a fraction in (0, 1]"),
    (["prune", "--checkpoint", "cifar10-student", "--out", OUT, "--macs-ratio", "1.5"], "--macs-ratio must be a fraction in (0, 1]"),
    (["distill", "--data", "x", "--out", OUT, "--beta1", "1"], "--beta1 must be in [0, 1)"),
    (["train-classifier", "--model", "resnet20", "--data", "x", "--out", OUT, "--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    # rates and thresholds that must be > 0 (and finite)
    (["distill", "--data", "x", "--out", OUT, "--lr-g", "0"], "--lr-g must be > 0"),
    (["distill", "--data", "x", "--out", OUT, "--lr-d", "nan"], "--lr-d must be a finite number"),
    (["qat", "--checkpoint", "cifar10-student", "--out", OUT, "--lr", "-0.0001"], "--lr must be > 0"),
    (["train-classifier", "--model", "resnet20", "--data", "x", "--out", OUT, "--lr", "0"], "--lr must be > 0"),
    (["generate", "--checkpoint", "cifar10-student", "--out", OUT, "--truncation", "0"], "--truncation must be > 0"),
    (["tsne", "--images", "x.npz", "--out", "{tmp}/t.png", "--perplexity", "-1"], "--perplexity must be > 0"),
]


@pytest.mark.parametrize("argv, fragment", BAD_NUMBERS, ids=[f"{a[0]} {a[-2]} {a[-1]}" for a, _ in BAD_NUMBERS])
def test_bad_numbers_are_refused_while_parsing(argv, fragment, place, capsys):
    refused(place, capsys, argv, fragment, f"(see `distilgan {argv[0]} --help`)")


# -- 3. unknown options and other usage errors: one line, pointing at the command's --help -----------
# every command with its required arguments, so that the unknown option is the only error
REQUIRED = {
    "bench": ["--checkpoint", "c"], "calibrate": ["--model", "m"], "demo": [], "distill": [],
    "eval": ["--images", "x.npz", "--ref", "r"], "export": ["--checkpoint", "c"],
    "generate": ["--checkpoint", "c", "--out", OUT], "gif": ["{tmp}/run"], "info": ["c"],
    "prune": ["--checkpoint", "c", "--out", OUT], "qat": ["--checkpoint", "c", "--out", OUT],
    "sample": ["--teacher", "t", "--out", OUT, "--per-class", "2"], "serve": ["--checkpoint", "c"],
    "stats": ["cifar10"], "train-classifier": ["--model", "m", "--data", "d", "--out", OUT], "train-teacher": [],
    "tsne": ["--images", "x.npz", "--out", "{tmp}/t.png"], "verify": ["{tmp}/folder"],
    "pairs": ["--teacher", "t", "--edit", "a:b", "--per-edit", "2", "--out", OUT], "distill-i2i": [],
    "train-encoder": [], "translate": ["--checkpoint", "c", "--in", "x.png", "--out", OUT],
    "invert": ["--teacher", "t", "--in", "x.png", "--label", "0", "--out", OUT],
}


def test_every_command_is_in_the_matrix():
    assert sorted(build_parser().commands) == sorted(REQUIRED)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_unknown_option_is_one_line(command, place, capsys):
    refused(place, capsys, [command, *REQUIRED[command], "--bogus-option", "1"], "unrecognized arguments: --bogus-option 1",
            f"(see `distilgan {command} --help`)")


def test_other_usage_errors_are_one_line(place, capsys):
    refused(place, capsys, ["genrate"], "invalid choice: 'genrate'", "(see `distilgan --help`)")
    refused(place, capsys, ["generate", "--out", "x.png"], "the following arguments are required: --checkpoint",
            "(see `distilgan generate --help`)")
    refused(place, capsys, ["export", "--checkpoint", "x", "--preset", "fast"], "--preset: invalid choice: 'fast'")


# -- 4. options that do not apply to the chosen mode --------------------------------------------------
NOT_APPLICABLE = [
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--format", "onnx", "--precision", "int8", "--preset", "mixed"],
     "--preset applies to --format openvino --precision int8 only"),
    # the default value given explicitly is refused too: the parser records what was typed
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--preset", "performance"], "--preset applies to"),
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--keep-first"], "--keep-first applies to --precision int8 only"),
    (["export", "--checkpoint", "cifar10-student", "--out", OUT, "--precision", "fp16", "--calibration-size", "64"],
     "--calibration-size applies to --precision int8 only, not --format onnx --precision fp16"),
    (["calibrate", "--model", "resnet20", "--out", OUT, "--calibration", "noise", "--keep", "0.5"],
     "--keep filters generated images", "not --calibration noise"),
    (["calibrate", "--model", "resnet20", "--out", OUT, "--calibration", "real", "--student", "s"], "--student is the generator of --calibration student"),
    (["calibrate", "--model", "resnet20", "--out", OUT, "--calibration", "student", "--teacher", "t"], "--teacher is the generator of --calibration teacher"),
    (["calibrate", "--model", "resnet20", "--out", OUT, "--validation-size", "10"], "--validation-size sizes the validation set of --accuracy-control"),
    (["eval", "--images", "x.npz", "--ref", "cifar10", "--truncation", "1.0"], "--truncation shapes the z of generated samples, not --images"),
    (["eval", "--images", "x.npz", "--ref", "{tmp}/stats.npz", "--ref-split", "test"], "--ref-split picks a split of a --ref dataset"),
    (["eval", "--images", "x.npz", "--ref", "{tmp}/stats.npz", "--ref-n", "100"], "--ref-n takes a subset of a --ref dataset"),
    (["eval", "--teacher", "builtin:toy", "--ref", "cifar10", "--fidelity-teacher", "builtin:toy"], "--fidelity-teacher compares a student"),
    (["tsne", "--images", "x.npz", "--out", "{tmp}/t.png", "--truncation", "1.0"], "--truncation shapes the z of generated samples"),
    (["bench", "--checkpoint", "cifar10-student", "--fid-samples", "0", "--fid-variants", "openvino int8"], "--fid-variants chooses the variants"),
    (["bench", "--checkpoint", "cifar10-student", "--backends", "torch,onnxruntime", "--int8-ablation"], "--int8-ablation adds OpenVINO INT8 variants"),
    (["distill", "--data", "x", "--out", OUT, "--pixel-decay", "0.02"], "--pixel-decay applies to --pixel-schedule epoch-linear only"),
    (["distill", "--data", "x", "--out", OUT, "--metric-n", "100"], "--metric-n sets up the in-loop metrics"),
    (["train-teacher", "--data", "x", "--out", OUT, "--metric-every", "5"], "--metric-every sets up the in-loop metrics"),
    (["qat", "--checkpoint", "cifar10-student", "--out", OUT, "--metric-ref", "cifar10"], "--metric-ref sets up the in-loop metrics"),
    (["prune", "--checkpoint", "cifar10-student", "--out", OUT, "--metric-n", "100"], "--metric-n sets up the in-loop metrics"),
]


@pytest.mark.parametrize("argv, fragments", [(a, f) for a, *f in NOT_APPLICABLE], ids=[" ".join(a[-2:]) for a, *_ in NOT_APPLICABLE])
def test_options_that_do_not_apply_are_refused(argv, fragments, place, capsys):
    line = refused(place, capsys, argv, *fragments)
    assert "leave it out" in line or "use it with" in line


# -- 5. the helpers themselves ------------------------------------------------------------------------

def test_existing_places_stay_usable(tmp_path):
    """Resume semantics: an existing folder (a run, a store) and an existing file are fine; nothing is made."""
    from distilgan.utils.paths import check_output_dir, check_output_file

    (tmp_path / "run").mkdir()
    (tmp_path / "old.json").write_text("{}")
    assert check_output_dir(tmp_path / "run", "--out") == tmp_path / "run"
    assert check_output_dir(tmp_path / "run", "--out", replace=True) == tmp_path / "run"
    assert check_output_file(tmp_path / "old.json", "--json") == tmp_path / "old.json"
    assert check_output_dir(tmp_path / "a" / "b" / "c", "--out") == tmp_path / "a" / "b" / "c"
    assert check_output_file(tmp_path / "a" / "b.json", "--json") == tmp_path / "a" / "b.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "run"]  # nothing created


def test_broken_link_and_trailing_slash_are_refused(tmp_path):
    from distilgan.errors import UserError
    from distilgan.utils.paths import check_output_dir, check_output_file

    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match="is a broken link; choose another --out"):
        check_output_dir(tmp_path / "dangling" / "x", "--out")
    with pytest.raises(UserError, match="names a folder; give a file path"):
        check_output_file(f"{tmp_path}/results/", "--json")


def test_the_parser_records_what_was_typed():
    from distilgan.utils.argtypes import given

    args = build_parser().parse_args(["export", "--checkpoint", "c", "--keep-last", "--preset", "performance"])
    assert given(args, "keep_last") and given(args, "preset") and given(args, "checkpoint")
    assert not given(args, "keep_first") and not given(args, "format") and not given(args, "calibration_size")
    assert args.format == "onnx" and args.calibration_size == 512  # defaults unchanged


@pytest.mark.parametrize("value, ok", [("0", True), ("7", True), ("-1", False), ("1.5", False), ("x", False)])
def test_numeric_types_accept_and_refuse(value, ok):
    import argparse

    from distilgan.utils import argtypes

    if ok:
        assert argtypes.nonneg_int(value) == int(value) and argtypes.seed(value) == int(value)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            argtypes.nonneg_int(value)
    assert argtypes.fraction("1") == 1.0 and argtypes.decay("0") == 0.0 and argtypes.positive_float("1e-4") == 1e-4
    for parse, bad in ((argtypes.fraction, "0"), (argtypes.decay, "1"), (argtypes.positive_float, "inf"),
                       (argtypes.positive_int, "0"), (argtypes.port, "65536")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
