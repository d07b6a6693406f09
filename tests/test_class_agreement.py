"""Class agreement ('ca'): the judge's file handling, the arithmetic, and real CIFAR-10 images judged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from distilgan.errors import UserError
from distilgan.metrics import class_agreement as ca

pytestmark = pytest.mark.usefixtures("one_thread")


def test_agreement_counts_arg_max_hits_overall_and_per_class():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 0.9 + 0.1 / 3
    result = ca.class_agreement(probs, labels)
    assert result["class_agreement"] == pytest.approx(4 / 6)
    assert result["class_agreement_per_class"] == {"0": 0.5, "1": 1.0, "2": 0.5}


def test_metric_needs_labels_and_a_judge():
    from distilgan.metrics.reference import FeatureSet

    with pytest.raises(UserError, match="asked for"):
        ca.compute(FeatureSet(features=np.zeros((2, 4), np.float32)))
    with pytest.raises(UserError, match="--classifier"):
        ca.compute(FeatureSet(features=np.zeros((2, 4), np.float32), labels=np.zeros(2, np.int64)))


def test_judge_file_found_checked_and_downloaded_into_the_cache(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILGAN_CACHE", str(tmp_path))
    name = "cifar10-resnet20"
    file, _, url = ca.KNOWN_JUDGES[name]
    source = shared / "weights" / "cifar10-resnet" / file
    seen = []

    def fake_urlopen(requested, timeout):  # offline: every download fails
        seen.append(requested)
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    with pytest.raises(UserError, match=f"cannot download .*{file}.*into {tmp_path}"):
        ca.judge_file(name)
    assert seen == [url] and not (tmp_path / "classifiers" / file).exists()  # nothing half-written

    (tmp_path / "classifiers").mkdir(exist_ok=True)
    shutil.copy(source, tmp_path / "classifiers" / file)
    assert ca.judge_file(name) == tmp_path / "classifiers" / file and len(seen) == 1  # cached: no download

    (tmp_path / "classifiers" / file).write_bytes(b"not the weights")
    with pytest.raises(UserError, match="wrong sha256"):
        ca.judge_file(name)


def test_the_shared_resnet56_recognises_real_test_images(shared):
    from distilgan.data.datasets import open_dataset

    zip_path = shared / "datasets" / "cifar10" / "cifar10-jpeg.zip"
    test = open_dataset(zip_path, "test")
    rng = np.random.default_rng(0)
    chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(test.labels == c), 30, replace=False) for c in range(10)]))
    judge, label = ca.load_judge(shared / "weights" / "cifar10-resnet" / "resnet56-4bfd9763.th")
    probs = ca.judge_probs(judge, test.images[chosen])
    result = ca.class_agreement(probs, test.labels[chosen])
    assert probs.shape == (300, 10) and np.allclose(probs.sum(1), 1)
    # 84 % on the full JPEG test copy (shared/README.md); 300 images leave room for sampling noise.
    assert 0.75 <= result["class_agreement"] <= 0.95, result
    # A permuted labelling is chance level: the metric measures the requested class, not confidence.
    assert ca.class_agreement(probs, (test.labels[chosen] + 1) % 10)["class_agreement"] < 0.2
    assert label.endswith("resnet56-4bfd9763.th")


@pytest.mark.slow
def test_eval_reports_class_agreement_with_its_judge(shared, cli, tmp_path):
    import json

    judge = shared / "weights" / "cifar10-resnet" / "resnet20-12fca82f.th"
    # No --ref: neither metric uses Inception features, so none are computed (and a --ref is refused).
    code, out, err = cli("eval", "--teacher", "builtin:cifar10-teacher", "--n", 100, "--metrics", "ca", "cs",
                         "--classifier", judge, "--json", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    protocol = json.loads((tmp_path / "r.json").read_text())["protocol"]
    assert "network" not in protocol and protocol["classifier"] == str(judge)
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert 0.0 < metrics["class_agreement"] <= 1.0 and set(metrics["class_agreement_per_class"]) == {str(c) for c in range(10)}
    assert metrics["ca_classifier"] == str(judge) and 1.0 <= metrics["cs"] <= 10.0
    assert "class_agreement" in out


def test_in_loop_class_agreement_ranks_higher_as_better(shared, tmp_path):
    import torch

    from distilgan.data.datasets import open_dataset
    from distilgan.train.loop_metrics import LoopMetrics, read_metrics
    from distilgan.utils.images import nhwc_to_nchw, uint8_to_float

    test = open_dataset(shared / "datasets" / "cifar10" / "cifar10-jpeg.zip", "test")
    bank = {c: torch.from_numpy(nhwc_to_nchw(uint8_to_float(test.images[test.labels == c][:10]))) for c in range(10)}

    class RealImages(torch.nn.Module):  # "generates" real test images of a class: shift 0 asks for the right one
        def __init__(self, shift: int) -> None:
            super().__init__()
            self.shift = shift

        def forward(self, z, labels):
            return torch.stack([bank[(int(c) + self.shift) % 10][i % 10] for i, c in enumerate(labels)])

    judge = shared / "weights" / "cifar10-resnet" / "resnet20-12fca82f.th"
    metrics = LoopMetrics(["ca"], 100, tmp_path, reference=lambda: None, z_sampler=lambda g, n: g.standard_normal((n, 4)),
                          classes=list(range(10)), seed=0, device=torch.device("cpu"), judge=str(judge))
    wrong, right = metrics.evaluate(RealImages(1), 1, 0, 100), metrics.evaluate(RealImages(0), 2, 0, 200)
    assert wrong["ca"] < 0.2 < 0.7 < right["ca"] and wrong["best"] and right["best"]  # higher is better
    assert set(right["ca_per_class"]) == {str(c) for c in range(10)} and right["protocol"]["ca_classifier"].endswith(judge.name)
    assert "network" not in right["protocol"]  # no Inception features computed for 'ca' alone
    assert metrics.evaluate(RealImages(1), 3, 0, 300)["best"] is False
    for record in (wrong, right):
        metrics.write(record)
    assert LoopMetrics(["ca"], 100, tmp_path, reference=lambda: None, z_sampler=lambda g, n: g.standard_normal((n, 4)),
                       classes=list(range(10)), seed=0, device=torch.device("cpu")).best["step"] == 2
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
