"""Image-to-image distillation through the one training loop: data split, objective, CLI, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distilgan.models import load_pretrained
from distilgan.models.translator import PatchDiscriminator, UNetTranslator
from distilgan.store.pairs import PairStore, write_pairs
from distilgan.teachers import load_teacher
from distilgan.train.config import LoopConfig
from distilgan.train.i2i_data import PairBatches, PairInputs, split_pairs
from distilgan.train.i2i_objective import I2IObjective
from distilgan.train.training_loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

EDITS = ["automobile:truck", "cat:dog"]
TINY = ["--ngf", "4", "--ndf", "4", "--batch-size", "8", "--holdout", "8", "--log-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def pair_set(tmp_path_factory):
    """48 pairs of two edits from the procedural teacher, scored by the smallest shipped classifier."""
    from distilgan.store.pairs import parse_edits

    out = tmp_path_factory.mktemp("pairs") / "set"
    teacher = load_teacher("builtin:toy")
    edits = parse_edits(EDITS, teacher.class_names, teacher.num_classes)
    write_pairs(teacher, out, edits, per_edit=24, seed=0, shard_size=16, batch_size=16,
                filter_model="cifar10-mobilenetv2_x0_25", min_confidence=0.05, progress=False)
    return out


def test_split_holds_out_the_last_pairs_before_filtering(pair_set) -> None:
    store = PairStore.open(pair_set)
    everything = store.load_all(filtered=False)
    split = split_pairs(store, holdout=8, filtered=True, min_confidence=None)
    kept = store.kept_mask()
    assert split.description["train_pairs"] == int(kept[:40].sum())
    assert split.description["holdout_kept"] == int(kept[40:].sum())
    np.testing.assert_array_equal(split.val_sources, everything["sources"][40:][kept[40:]])
    unfiltered = split_pairs(store, holdout=8, filtered=False, min_confidence=None)
    assert unfiltered.description["train_pairs"] == 40 and not unfiltered.description["filtered"]
    # the held-out pairs do not depend on the run's filter: runs with and without it are judged alike
    np.testing.assert_array_equal(unfiltered.val_sources, split.val_sources)
    all_kept = split_pairs(store, holdout=8, filtered=True, min_confidence=0.0)
    assert all_kept.description["train_pairs"] == 40


def test_pair_batches_are_a_function_of_seed_and_epoch(pair_set) -> None:
    split = split_pairs(PairStore.open(pair_set), holdout=8, filtered=False, min_confidence=None)
    source = PairBatches(split.train_sources, split.train_targets, split.train_edits, batch_size=8, seed=3)
    assert source.steps_per_epoch == 5
    first = list(source.batches(epoch=1))
    again = list(source.batches(epoch=1, skip=2))
    assert len(first) == 5 and len(again) == 3
    for a, b in zip(first[2:], again):
        assert all(torch.equal(a[k], b[k]) for k in ("sources", "targets", "edits"))
    other = next(iter(source.batches(epoch=2)))
    assert not torch.equal(first[0]["sources"], other["sources"])
    batch = first[0]
    assert batch["sources"].shape == (8, 3, 32, 32) and batch["sources"].dtype == torch.float32
    assert float(batch["sources"].min()) >= -1.0 and float(batch["sources"].max()) <= 1.0
    # a mirrored pair is flipped on both sides: each (source, target) is still a pair of the set
    sets = {(s.tobytes(), t.tobytes()) for s, t in zip(split.train_sources, split.train_targets)}
    from distilgan.utils.images import float_to_uint8, nchw_to_nhwc

    for s, t in zip(nchw_to_nhwc(float_to_uint8(batch["sources"].numpy())), nchw_to_nhwc(float_to_uint8(batch["targets"].numpy()))):
        assert (s.tobytes(), t.tobytes()) in sets or (s[:, ::-1].tobytes(), t[:, ::-1].tobytes()) in sets


def test_objective_learns_the_edit_on_a_fixed_batch(pair_set) -> None:
    torch.manual_seed(0)
    split = split_pairs(PairStore.open(pair_set), holdout=8, filtered=False, min_confidence=None)
    G = UNetTranslator(resolution=32, ngf=8, num_edits=2)
    D = PatchDiscriminator(resolution=32, ndf=8, num_edits=2)
    objective = I2IObjective(G, D)
    trainer = Trainer(LoopConfig(batch_size=8, lr_g=2e-3, ema=False), G, D, objective,
                      inputs=PairInputs(split, seed=0))
    batch = next(iter(PairBatches(split.train_sources, split.train_targets, split.train_edits, 8, 0, mirror=False).batches(0)))
    d_before = [p.detach().clone() for p in D.parameters()]
    terms = [trainer.train_step(batch) for _ in range(30)]
    assert set(terms[0]) >= {"d/real", "d/fake", "d/total", "g/l1", "g/feature", "g/gan", "g/total"}
    assert all(bool(torch.isfinite(t["g/total"])) for t in terms)
    assert float(terms[-1]["g/l1"]) < 0.6 * float(terms[0]["g/l1"])  # it fits the teacher's edited images
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))  # D trains too
    grid = trainer.sample_grid()
    assert grid.shape[1:] == (3, 32, 32) and len(grid) % 3 == 0  # (source | student | teacher) triplets


def test_distill_i2i_cli_trains_saves_and_resumes_exactly(pair_set, tmp_path, cli) -> None:
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    code, out, err = cli("distill-i2i", "--data", pair_set, "--out", straight, *TINY, "--max-steps", "6",
                         "--metrics", "l1", "psnr", "--metric-every", "3")
    assert code == 0, err
    assert "training pairs of 48" in out and "filtered at confidence 0.05" in out
    model = load_pretrained(straight / "generator")
    assert isinstance(model, UNetTranslator) and model.num_edits == 2 and list(model.edit_names) == EDITS
    x = torch.zeros(2, 3, 32, 32)
    assert model(x, torch.tensor([0, 1])).shape == (2, 3, 32, 32)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert all(0 <= r["l1"] <= 2 and r["psnr"] > 0 for r in records)
    assert (straight / "best" / "model.safetensors").is_file() and list((straight / "grids").glob("*.png"))

    code, _, err = cli("distill-i2i", "--data", pair_set, "--out", split_run, *TINY, "--max-steps", "3",
                       "--metrics", "l1", "psnr", "--metric-every", "3")
    assert code == 0, err
    code, _, err = cli("distill-i2i", "--out", split_run, "--resume", "--max-steps", "6", "--quiet")
    assert code == 0, err
    a, b = load_pretrained(straight / "generator"), load_pretrained(split_run / "generator")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    resumed = [json.loads(line) for line in (split_run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["l1"]) for r in resumed] == [(r["step"], r["l1"]) for r in records]


def test_resume_mid_epoch_is_exact_and_refuses_another_set(pair_set, tmp_path, cli) -> None:
    # unfiltered: 40 training pairs, 5 steps of 8 per epoch, so step 3 is mid-epoch
    args = ["--data", pair_set, *TINY, "--no-filtered", "--max-steps", "7"]
    code, _, err = cli("distill-i2i", "--out", tmp_path / "straight", *args)
    assert code == 0, err
    code, _, err = cli("distill-i2i", "--out", tmp_path / "split", *args[:-1], "3")
    assert code == 0, err
    assert json.loads((tmp_path / "split" / "generator" / "config.json").read_text())["metadata"]["epoch"] == 0
    code, _, err = cli("distill-i2i", "--out", tmp_path / "split", "--resume", "--max-steps", "7", "--quiet")
    assert code == 0, err
    a, b = load_pretrained(tmp_path / "straight" / "generator"), load_pretrained(tmp_path / "split" / "generator")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    from distilgan.store.pairs import parse_edits

    other = tmp_path / "other"
    teacher = load_teacher("builtin:toy")
    write_pairs(teacher, other, parse_edits(EDITS, teacher.class_names, 10), per_edit=24, seed=1, shard_size=16,
                batch_size=16, filter_model=None, progress=False)
    code, _, err = cli("distill-i2i", "--out", tmp_path / "split", "--resume", "--data", other, "--max-steps", "9", "--quiet")
    assert code == 2 and "not the set this run started on" in err, err


def test_unfiltered_run_trains_on_every_pair(pair_set, tmp_path, cli) -> None:
    code, out, err = cli("distill-i2i", "--data", pair_set, "--out", tmp_path / "run", *TINY, "--max-steps", "1",
                         "--no-filtered", "--separable", "--norm", "instance")
    assert code == 0, err
    assert "40 training pairs of 48 (unfiltered (every pair))" in out
    model = load_pretrained(tmp_path / "run" / "generator")
    assert model.config["separable"] is True and model.config["norm"] == "instance"


@pytest.mark.parametrize("extra, message", [
    (["--holdout", "48"], "leaves no training pairs"),
    (["--no-filtered", "--min-confidence", "0.5"], "--min-confidence"),
    (["--metrics", "fid"], "metric 'fid' does not exist inside this loop"),
    (["--metrics", "l1", "--metric-classifier", "x.th"], "add flip to --metrics"),
    (["--min-confidence", "1.5"], "a softmax probability in [0, 1]"),
    (["--min-confidence", "1.0"], "the filter keeps no training pairs"),
])
def test_bad_settings_are_one_line(pair_set, tmp_path, cli, extra, message) -> None:
    code, _, err = cli("distill-i2i", "--data", pair_set, "--out", tmp_path / "run", *TINY, "--max-steps", "1", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_store_that_is_not_a_pair_set_is_refused(tmp_path, cli) -> None:
    (tmp_path / "nothing").mkdir()
    code, _, err = cli("distill-i2i", "--data", tmp_path / "nothing", "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "distilgan pairs" in err, err
