"""Edit pair sets (issue 18): write_pairs, PairStore, verify_pairs, parse_edits and `distilgan pairs`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distilgan.errors import UserError
from distilgan.store.pairs import PairStore, parse_edits, verify_pairs, write_pairs
from distilgan.utils.images import float_to_uint8, nchw_to_nhwc

pytestmark = pytest.mark.usefixtures("one_thread")

EDITS = ["automobile:truck", "horse:deer"]


@pytest.fixture(scope="module")
def toy():
    from distilgan.teachers import load_teacher

    return load_teacher("builtin:toy")


@pytest.fixture(scope="module")
def random_filter(tmp_path_factory) -> Path:
    """A randomly initialised CIFAR-10 classifier saved as a folder: its softmax spreads around 0.1,
    so a threshold inside that spread keeps some pairs and drops others."""
    import torch

    from distilgan.models.classifiers import build_classifier

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("filter") / "vgg-random"
    build_classifier("vgg11_bn_x0_25").eval().save_pretrained(folder)
    return folder


def _write(teacher, out: Path, **options) -> dict:
    kwargs = dict(edits=EDITS, per_edit=10, shard_size=8, batch_size=8, filter_model=None, progress=False)
    return write_pairs(teacher, out, **{**kwargs, **options})


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.npz"))}


def test_same_arguments_give_the_same_bytes_and_another_seed_differs(tmp_path: Path, toy, random_filter) -> None:
    first = _write(toy, tmp_path / "a", filter_model=random_filter)
    second = _write(toy, tmp_path / "b", filter_model=random_filter)
    assert first["num_shards"] == 3 and first["total"] == 20 and first["complete"]
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    other = _write(toy, tmp_path / "c", filter_model=random_filter, seed=1)
    assert [e["sha256"] for e in other["shards"]] != [e["sha256"] for e in first["shards"]]
    assert not np.array_equal(PairStore.open(tmp_path / "a").read_shard(0)["z"], PairStore.open(tmp_path / "c").read_shard(0)["z"])


def test_resume_regenerates_missing_and_truncated_shards_identically(tmp_path: Path, toy) -> None:
    _write(toy, tmp_path / "ref")
    reference = _shard_bytes(tmp_path / "ref")
    out = tmp_path / "set"
    _write(toy, out)
    (out / "shard-00001.npz").unlink()
    with open(out / "shard-00002.npz", "r+b") as handle:
        handle.truncate(100)
    stats: dict = {}
    manifest = _write(toy, out, stats=stats)
    assert stats == {"resumed": 8, "written": 12}
    assert manifest["complete"] and _shard_bytes(out) == reference
    assert verify_pairs(out) == []


def test_a_run_killed_after_one_shard_resumes_byte_identical(tmp_path: Path, toy, random_filter, monkeypatch) -> None:
    import distilgan.store.pairs_writer as pw

    _write(toy, tmp_path / "ref", filter_model=random_filter)
    real, calls = pw._kept_entry, []

    def dies_on_the_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C between shards
        return real(*args, **kwargs)

    monkeypatch.setattr(pw, "_kept_entry", dies_on_the_second_shard)
    out = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        _write(toy, out, filter_model=random_filter)
    partial = json.loads((out / "manifest.json").read_text())
    assert not partial["complete"] and [e["index"] for e in partial["shards"]] == [0]
    with pytest.raises(UserError, match="incomplete"):
        PairStore.open(out)
    monkeypatch.setattr(pw, "_kept_entry", real)
    stats: dict = {}
    _write(toy, out, filter_model=random_filter, stats=stats)
    assert stats == {"resumed": 8, "written": 12}
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "ref")
    assert (out / "manifest.json").read_bytes() == (tmp_path / "ref/manifest.json").read_bytes()


def test_a_folder_of_other_settings_is_refused_in_one_line(tmp_path: Path, cli) -> None:
    out = tmp_path / "set"
    base = ["pairs", "--teacher", "builtin:toy", "--per-edit", "4", "--shard-size", "8", "--out", out, "--no-filter", "--quiet"]
    code, stdout, _ = cli(*base, "--edit", "automobile:truck")
    assert code == 0 and "wrote 4 pairs" in stdout and "all 4 pairs kept" in stdout
    for extra, named in ((["--edit", "horse:deer"], "--edit list"), (["--edit", "automobile:truck", "--seed", "3"], "--seed")):
        code, stdout, stderr = cli(*base, *extra)
        assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
        assert named in stderr and "--overwrite" in stderr and "Traceback" not in stderr
    code, stdout, _ = cli(*base, "--edit", "horse:deer", "--overwrite")
    assert code == 0 and PairStore.open(out).edit_names == ["horse:deer"]
    code, stdout, _ = cli(*base, "--edit", "horse:deer")  # the same again: nothing left to do
    assert code == 0 and "4 kept from an earlier run" in stdout and "sampled 0" in stdout
    store = tmp_path / "store"
    assert cli("sample", "--teacher", "builtin:toy", "--per-class", "1", "--out", store, "--quiet")[0] == 0
    code, _, stderr = cli(*base[:-3], store, "--edit", "cat:dog", "--no-filter")
    assert code == 2 and "holds a distillation set" in stderr and len(stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="not a pair set"):
        PairStore.open(store)


def test_filter_counts_match_the_scores_and_load_all_returns_the_kept_pairs(tmp_path: Path, toy, random_filter) -> None:
    from distilgan.metrics.class_agreement import judge_probs, load_judge

    out = tmp_path / "set"
    _write(toy, out, filter_model=random_filter)
    every = PairStore.open(out).load_all(filtered=False)
    lowest = np.minimum(every["source_scores"], every["target_scores"])
    threshold = float(np.median(lowest))  # between the scores: some pairs kept, some not
    stats: dict = {}
    manifest = _write(toy, out, filter_model=random_filter, min_confidence=threshold, stats=stats)
    assert stats["written"] == 0  # a new threshold only recounts
    mask = lowest >= threshold
    assert 0 < mask.sum() < len(mask)
    assert manifest["filter"]["kept"] == int(mask.sum()) == sum(e["kept"] for e in manifest["shards"])
    assert manifest["filter"]["kept_fraction"] == pytest.approx(mask.mean())
    for k, edit in enumerate(manifest["edits"]):
        counts = manifest["filter"]["kept_per_edit"][edit["name"]]
        assert counts == {"kept": int(mask[every["edits"] == k].sum()), "total": 10, "fraction": counts["kept"] / 10}
    ps = PairStore.open(out)
    kept = ps.load_all()
    assert np.array_equal(ps.kept_mask(), mask)
    assert np.array_equal(kept["sources"], every["sources"][mask]) and np.array_equal(kept["z"], every["z"][mask])
    assert ps.kept_mask(0.0).all() and not ps.kept_mask(1.01).any()
    assert len(ps.load_all(min_confidence=1.01)["targets"]) == 0
    assert _write(toy, out, filter_model=random_filter, min_confidence=0.0)["filter"]["kept"] == 20
    assert _write(toy, out, filter_model=random_filter, min_confidence=1.01)["filter"]["kept"] == 0
    assert verify_pairs(out) == []
    # the scores are the filter's softmax over the stored uint8 images
    model, _ = load_judge(random_filter)
    probs = judge_probs(model, every["targets"][:4])
    assert np.allclose(every["target_scores"][:4], probs[np.arange(4), every["target_labels"][:4]], atol=1e-6)


def test_index_rule_labels_and_images_follow_the_teacher(tmp_path: Path, toy) -> None:
    _write(toy, tmp_path / "set", edits=["1:9", "horse:deer", "cat:dog"], per_edit=5)
    ps = PairStore.open(tmp_path / "set")
    assert ps.edit_names == ["automobile:truck", "horse:deer", "cat:dog"] and ps.num_pairs == 15
    assert (ps.resolution, ps.channels, ps.num_classes, ps.z_dim) == (32, 3, 10, toy.z_dim)
    pairs = ps.load_all()  # a --no-filter set: every pair, NaN scores
    assert len(pairs["z"]) == 15 and np.isnan(pairs["source_scores"]).all()
    assert np.array_equal(pairs["edits"], np.arange(15) % 3)
    assert np.array_equal(pairs["source_labels"], np.array([1, 7, 3])[pairs["edits"]])
    assert np.array_equal(pairs["target_labels"], np.array([9, 4, 5])[pairs["edits"]])
    picks = [0, 4, 8, 14]
    z = pairs["z"][picks]
    for side in ("source", "target"):
        again = nchw_to_nhwc(float_to_uint8(toy.generate(z, pairs[f"{side}_labels"][picks])))
        assert np.array_equal(pairs[f"{side}s"][picks], again)
    assert not np.array_equal(pairs["sources"], pairs["targets"])


def test_parse_edits() -> None:
    from distilgan.models.classifiers import CIFAR10_CLASSES

    edits = parse_edits(["Automobile:TRUCK", " 7 : 4 "], CIFAR10_CLASSES, 10)
    assert edits == [{"name": "automobile:truck", "source": 1, "target": 9}, {"name": "horse:deer", "source": 7, "target": 4}]
    assert parse_edits(["0:2"], None, 3) == [{"name": "0:2", "source": 0, "target": 2}]
    for bad, words in ((["1:9", "automobile:truck"], "twice"), (["cat"], "SOURCE:TARGET"), (["a:b:c"], "SOURCE:TARGET"),
                       (["cat:cat"], "same source and target"), (["cat:unicorn"], "unknown class 'unicorn'"),
                       (["0:12"], "outside"), ([], "no --edit")):
        with pytest.raises(UserError, match=words):
            parse_edits(bad, CIFAR10_CLASSES, 10)


@pytest.mark.parametrize("extra, words", [
    (["--edit", "automobile:unicorn"], "unknown class 'unicorn'"),
    (["--edit", "cat:CAT"], "same source and target"),
    (["--edit", "automobile-truck"], "SOURCE:TARGET"),
    (["--edit", "cat:dog", "--per-edit", "0"], "--per-edit must be >= 1"),
    (["--edit", "cat:dog", "--filter-model", "FILTER16"], "--no-filter"),
    (["--edit", "cat:dog", "--filter-model", "FILTER3"], "3 classes"),
    (["--edit", "cat:dog", "--no-filter", "--min-confidence", "0.2"], "--min-confidence applies only with a filter"),
    (["--edit", "cat:dog", "--no-filter", "--filter-model", "x"], "not allowed with"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, cli, extra, words) -> None:
    from distilgan.models.classifiers import build_classifier

    names = {"FILTER16": dict(resolution=16), "FILTER3": dict(num_classes=3)}
    for name, overrides in names.items():
        if name in extra:
            extra = [str(tmp_path / name) if item == name else item for item in extra]
            build_classifier("vgg11_bn_x0_25", **overrides).save_pretrained(tmp_path / name)
    args = ["pairs", "--teacher", "builtin:toy", "--per-edit", "2", "--out", tmp_path / "out", "--quiet", *extra]
    if "--per-edit" in extra:
        args[3:5] = []
    code, stdout, stderr = cli(*args)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert words in stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_verify_ok_then_names_the_shard_with_a_flipped_byte(tmp_path: Path, cli, toy, random_filter) -> None:
    out = tmp_path / "set"
    _write(toy, out, filter_model=random_filter)
    code, stdout, _ = cli("verify", out, "--quiet")
    assert code == 0 and stdout.startswith(f"OK {out}: 20 pairs, 3 shards, 2 edits x 10")
    assert "kept" in stdout and str(random_filter) in stdout
    shard = out / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, stdout, _ = cli("verify", out, "--quiet")
    assert code == 1 and stdout.splitlines() == [
        "BAD shard-00001.npz: checksum mismatch (corrupt or changed; rerunning the same distilgan pairs command "
        "regenerates it)"]
    ps = PairStore.open(out)
    ps.read_shard(0)
    with pytest.raises(UserError, match="shard-00001.npz .*distilgan pairs command"):
        ps.read_shard(1)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["filter"]["kept"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert any("filter kept" in p for p in verify_pairs(out))
    with pytest.raises(UserError, match="pair set not found"):
        PairStore.open(tmp_path / "nothing")


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_a_teacher_file_works_like_the_builtin_one(tmp_path: Path, cli, kind) -> None:
    import torch

    from tests._teacher_fixtures import make_onnx_teacher, make_torchscript_teacher

    path = tmp_path / ("t.onnx" if kind == "onnx" else "t.pt")
    module = (make_onnx_teacher if kind == "onnx" else make_torchscript_teacher)(path, z_dim=8, num_classes=3, resolution=8)
    out = tmp_path / "set"
    code, stdout, stderr = cli("pairs", "--teacher", f"{kind}:{path}", "--edit", "0:2", "--edit", "2:1", "--per-edit", "6",
                               "--shard-size", "8", "--out", out, "--no-filter", "--quiet")
    assert code == 0, stderr
    assert "wrote 12 pairs (2 edits x 6, 8x8x3) in 2 shards" in stdout
    assert cli("verify", out, "--quiet")[0] == 0
    pairs = PairStore.open(out).load_all()
    assert len(pairs["z"]) == 12 and PairStore.open(out).edit_names == ["0:2", "2:1"]
    with torch.no_grad():
        for side in ("source", "target"):
            images = module(torch.from_numpy(pairs["z"]), torch.from_numpy(pairs[f"{side}_labels"])).numpy()
            assert np.array_equal(pairs[f"{side}s"], nchw_to_nhwc(float_to_uint8(images)))


def test_the_cli_default_filter_is_the_writers() -> None:
    from distilgan.commands import pairs as command
    from distilgan.store import pairs_writer

    assert command.DEFAULT_FILTER == pairs_writer.DEFAULT_FILTER != "cifar10-resnet56"
