"""Real datasets: every reader on tiny synthetic files, bad inputs, and CIFAR-10 from ../shared."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
from _dataset_fixtures import (
    CLASSES,
    class_tree_files,
    encode,
    random_images,
    stylegan_files,
    tar_folder,
    write_cifar_folder,
    write_files,
    write_zip,
)

from distilgan.data import cifar10
from distilgan.data.datasets import ImageDataset, open_dataset
from distilgan.errors import UserError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
_FINGERPRINTS: dict[str, dict[str, str]] = {}  # filled by the shared CIFAR tests, compared after


# --- CIFAR-10 python format ------------------------------------------------------------------


@pytest.fixture
def fake_cifar(tmp_path):
    expected = write_cifar_folder(tmp_path)
    return tmp_path, expected


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_folder_and_parent(tmp_path, protocol):
    expected = write_cifar_folder(tmp_path, protocol=protocol)
    for spec in (tmp_path, tmp_path / "cifar-10-batches-py"):
        with pytest.warns(UserWarning, match="differ from the official release"):
            train = open_dataset(spec)
        assert train.format == "cifar10-python" and len(train) == 20
        np.testing.assert_array_equal(train.images, expected["train_images"])
        np.testing.assert_array_equal(train.labels, expected["train_labels"])
        assert train.labels.dtype == np.int64 and train.images.dtype == np.uint8
        assert train.class_names[:2] == ["plane", "car"] and train.num_classes == 10
        assert (train.resolution, train.channels) == (32, 3)
        assert train.info["official_md5"] is False
    with pytest.warns(UserWarning):
        test = open_dataset(tmp_path, "test")
    np.testing.assert_array_equal(test.images, expected["test_images"])
    np.testing.assert_array_equal(test.labels, expected["test_labels"])


def test_cifar_tar_reads_without_extracting(fake_cifar):
    root, expected = fake_cifar
    tar = tar_folder(root)
    for split in ("train", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # verify_md5=False: no check, no warning
            ds = open_dataset(tar, split, verify_md5=False)
        np.testing.assert_array_equal(ds.images, expected[f"{split}_images"])
        np.testing.assert_array_equal(ds.labels, expected[f"{split}_labels"])
        assert ds.info["official_md5"] is None


def test_cifar_md5_strict_and_official_match(fake_cifar, monkeypatch):
    root, _ = fake_cifar
    with pytest.raises(UserError, match="differ from the official release"):
        open_dataset(root, verify_md5=True)
    # With the expected md5s set to these files' own, the same check passes silently.
    own = {n: hashlib.md5((root / "cifar-10-batches-py" / n).read_bytes()).hexdigest() for n in cifar10.FILE_MD5}
    monkeypatch.setattr(cifar10, "FILE_MD5", own)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_dataset(root, verify_md5=True).info["official_md5"] is True


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar_folder(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(UserError, match=r"data_batch_2: .*not allowed"):
        open_dataset(tmp_path, verify_md5=False)
    assert not marker.exists()


def test_cifar_bad_files(tmp_path):
    write_cifar_folder(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(UserError, match="unknown split 'val'"):
        open_dataset(tmp_path, "val", verify_md5=False)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(UserError, match=r"data_batch_3 has data \(2, 100\)"):
        open_dataset(tmp_path, verify_md5=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks data_batch_3"):
        open_dataset(tmp_path, verify_md5=False)
    truncated = tmp_path / "cut" / "cifar-10-python.tar.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(tar_folder(tmp_path).read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        open_dataset(truncated, verify_md5=False)


def test_cifar10_name_cache_and_download(fake_cifar, tmp_path_factory, monkeypatch):
    root, expected = fake_cifar
    source_tar = tar_folder(root)
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("DISTILGAN_DATA", str(cache))
    with pytest.raises(UserError, match=r"CIFAR-10 not found in .*give a path instead .*download_cifar10\(\)") as info:
        open_dataset("cifar10")
    assert "\n" not in str(info.value) and str(cache) in str(info.value)

    # Offline / missing file: one line naming where to put the tar.
    monkeypatch.setattr(cifar10, "CIFAR10_URL", (root / "nowhere.tar.gz").as_uri())
    with pytest.raises(UserError, match=r"cannot download .*put cifar-10-python.tar.gz"):
        open_dataset("cifar10", download=True)
    # Wrong checksum: refused, and nothing is left in the cache.
    monkeypatch.setattr(cifar10, "CIFAR10_URL", source_tar.as_uri())
    with pytest.raises(UserError, match="md5"):
        open_dataset("cifar10", download=True)
    assert list(cache.iterdir()) == []
    # Right checksum (our fake's own): fetched atomically into the cache and read from the tar.
    monkeypatch.setattr(cifar10, "CIFAR10_TAR_MD5", hashlib.md5(source_tar.read_bytes()).hexdigest())
    ds = open_dataset("cifar10", "test", download=True, verify_md5=False)
    assert (cache / "cifar-10-python.tar.gz").is_file() and [p.name for p in cache.iterdir()] == ["cifar-10-python.tar.gz"]
    np.testing.assert_array_equal(ds.images, expected["test_images"])
    assert ds.describe()["source"] == "cifar10"
    # The cache must hold the official batches: by default a mismatch there is an error.
    with pytest.raises(UserError, match="differ from the official release"):
        open_dataset("cifar10")


# --- class folders, zips, StyleGAN2-ADA ---------------------------------------------------------


def test_class_tree_folder_and_zip(tmp_path):
    files, expected = class_tree_files()
    folder = write_files(tmp_path / "tree", files)
    archive = write_zip(tmp_path / "tree.zip", files, prefix="wrapped/")  # a wrapping folder is skipped
    for spec in (folder, archive):
        ds = open_dataset(spec)
        assert ds.class_names == CLASSES and ds.format == "class-folders"
        np.testing.assert_array_equal(ds.images, expected["train"][0])
        np.testing.assert_array_equal(ds.labels, expected["train"][1])
        with pytest.raises(UserError, match="only split 'train'"):
            open_dataset(spec, "test")


def test_class_tree_with_splits(tmp_path):
    files, expected = class_tree_files(splits=("train", "test"))
    del files["test/bee/001.png"]  # uneven splits keep one class index per name
    for spec in (write_files(tmp_path / "tree", files), write_zip(tmp_path / "tree.zip", files)):
        train, test = open_dataset(spec, "train"), open_dataset(spec, "test")
        np.testing.assert_array_equal(train.images, expected["train"][0])
        np.testing.assert_array_equal(train.labels, expected["train"][1])
        keep = np.arange(9) != 4
        np.testing.assert_array_equal(test.images, expected["test"][0][keep])
        assert test.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and test.class_names == CLASSES
        with pytest.raises(UserError, match=r"unknown split 'val' .*it has: test, train"):
            open_dataset(spec, "val")


def test_grayscale_and_mixed_modes(tmp_path):
    gray = random_images(1, 2, channels=1)
    rgb = random_images(2, 1)
    files = {"a/0.png": encode(gray[0]), "a/1.png": encode(gray[1])}
    ds = open_dataset(write_files(tmp_path / "gray", files))
    assert ds.channels == 1
    np.testing.assert_array_equal(ds.images, gray)
    files["b/0.jpg"] = encode(rgb[0], "JPEG")
    mixed = open_dataset(write_files(tmp_path / "mixed", files))
    assert mixed.images.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(mixed.images[1], np.repeat(gray[1], 3, axis=2))


def test_stylegan2_ada_zip_and_folder(tmp_path):
    files, images = stylegan_files([2, 0, 1, 2])
    for spec in (write_zip(tmp_path / "sg.zip", files), write_files(tmp_path / "sg", files)):
        ds = open_dataset(spec)
        assert ds.format == "stylegan2-ada" and ds.class_names == ["0", "1", "2"]
        np.testing.assert_array_equal(ds.images, images)
        assert ds.labels.tolist() == [2, 0, 1, 2]
        with pytest.raises(UserError, match="only split 'train'"):
            open_dataset(spec, "test")
    unlabeled_files, _ = stylegan_files(None)
    unlabeled = open_dataset(write_zip(tmp_path / "u.zip", unlabeled_files))
    assert unlabeled.num_classes == 1 and not unlabeled.labels.any() and unlabeled.info["labeled"] is False
    del files["00000/img00000001.png"]
    files["00000/extra.png"] = encode(images[0])
    with pytest.raises(UserError, match="extra.png has no label in dataset.json"):
        open_dataset(write_zip(tmp_path / "missing.zip", files))


def test_npz_nhwc_nchw_and_ranges(tmp_path):
    images = random_images(3, 5)
    labels = np.array([0, 1, 1, 0, 2])
    np.savez(tmp_path / "nhwc.npz", images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "nchw.npz", x=images.transpose(0, 3, 1, 2), y=labels)
    np.savez(tmp_path / "float.npz", images=images.astype(np.float32), labels=labels)
    a, b, c = (open_dataset(tmp_path / f"{n}.npz") for n in ("nhwc", "nchw", "float"))
    for ds in (a, b, c):
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)
    assert a.class_names == ["a", "b", "c"] and b.class_names == ["0", "1", "2"]
    assert a.fingerprint() != b.fingerprint() and b.fingerprint() == c.fingerprint()
    np.savez(tmp_path / "signed.npz", images=images / 127.5 - 1, labels=labels)
    with pytest.raises(UserError, match=r"float64 in \[-1, 1\].*float_to_uint8"):
        open_dataset(tmp_path / "signed.npz")
    np.savez(tmp_path / "unit.npz", images=images / 255.0)
    with pytest.raises(UserError, match="expected uint8 values 0..255"):
        open_dataset(tmp_path / "unit.npz")
    np.savez(tmp_path / "nolabels.npz", images=images)
    assert open_dataset(tmp_path / "nolabels.npz").class_names == ["unlabeled"]
    np.savez(tmp_path / "wrongkey.npz", pictures=images)
    with pytest.raises(UserError, match="no 'images'"):
        open_dataset(tmp_path / "wrongkey.npz")
    np.savez(tmp_path / "fewnames.npz", images=images, labels=labels, class_names=np.array(["a"]))
    with pytest.raises(UserError, match="class_names"):
        open_dataset(tmp_path / "fewnames.npz")


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    cases = []
    cases.append((tmp_path / "absent", "dataset not found"))
    (tmp_path / "notes.txt").write_text("hi")
    cases.append((tmp_path / "notes.txt", "unknown dataset layout"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "is empty"))
    write_files(tmp_path / "noimages", {"a/readme.txt": b"x"})
    cases.append((tmp_path / "noimages", "has no images"))
    files, _ = class_tree_files()
    files["bee/002.png"] = b"not a png"
    cases.append((write_files(tmp_path / "corrupt", files), r"cannot decode image .*bee/002.png"))
    cases.append((write_zip(tmp_path / "corrupt.zip", files), r"cannot decode image .*corrupt.zip:bee/002.png"))
    files["bee/002.png"] = encode(random_images(0, 1, size=9)[0])
    cases.append((write_files(tmp_path / "sizes", files), r"bee/002.png is 9x9 but .* is 8x8"))
    files["bee/002.png"] = encode(random_images(0, 1)[0])
    files["stray.png"] = files["bee/002.png"]
    cases.append((write_files(tmp_path / "stray", files), "stray.png is outside a class folder"))
    (tmp_path / "broken.zip").write_bytes(b"PK nonsense")
    cases.append((tmp_path / "broken.zip", "cannot open zip"))
    for spec, message in cases:
        with pytest.raises(UserError, match=message) as info:
            open_dataset(spec)
        assert "\n" not in str(info.value), spec


def test_flat_image_folder_is_one_unlabeled_class(tmp_path):
    images = random_images(4, 3)
    ds = open_dataset(write_files(tmp_path / "flat", {f"{i}.png": encode(im) for i, im in enumerate(images)}))
    assert ds.class_names == ["unlabeled"] and ds.format == "image-folder"
    np.testing.assert_array_equal(ds.images, images)


# --- the ImageDataset object --------------------------------------------------------------------


def test_fingerprint_describe_subsets():
    images, labels = random_images(5, 12), np.arange(12) % 3
    ds = ImageDataset(images, labels, CLASSES, source="mem")
    same = ImageDataset(images.copy(), labels.copy(), CLASSES, source="elsewhere")
    assert ds.fingerprint() == same.fingerprint() and len(ds.fingerprint()) == 64
    changed = images.copy()
    changed[3, 0, 0, 0] ^= 1
    assert ImageDataset(changed, labels, CLASSES).fingerprint() != ds.fingerprint()
    assert ImageDataset(images, (labels + 1) % 3, CLASSES).fingerprint() != ds.fingerprint()
    assert ImageDataset(images, labels, ["x", "y", "z"]).fingerprint() != ds.fingerprint()
    info = ds.describe()
    assert {k: info[k] for k in ("source", "split", "count", "resolution")} == {
        "source": "mem", "split": "train", "count": 12, "resolution": 8}
    assert info["fingerprint"] == ds.fingerprint()

    taken = ds.take(5, seed=1)
    assert len(taken) == 5 and taken.fingerprint() == ds.take(5, seed=1).fingerprint()
    assert taken.fingerprint() != ds.take(5, seed=2).fingerprint()
    assert taken.describe()["take"] == {"n": 5, "seed": 1, "of": 12}
    with pytest.raises(UserError, match="cannot take 13"):
        ds.take(13)
    bees = ds.per_class("bee")
    assert len(bees) == 4 and set(bees.labels.tolist()) == {1} and bees.fingerprint() == ds.per_class(1).fingerprint()
    np.testing.assert_array_equal(bees.images, images[1::3])
    with pytest.raises(UserError, match="unknown class 'dog'"):
        ds.per_class("dog")
    np.testing.assert_array_equal(ds.subset([2, 0]).images, images[[2, 0]])
    assert len(ds.subset(labels == 0)) == 4 and len(ds.subset([])) == 0
    with pytest.raises(UserError, match="labels must lie in"):
        ImageDataset(images, labels + 3, CLASSES)


# --- CIFAR-10 on ../shared ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt_cifar(shared, tmp_path_factory):
    """The official python format rebuilt from ../shared (folder and tar.gz), about 10-20 s."""
    out = tmp_path_factory.mktemp("cifar-rebuilt")
    script = shared / "datasets" / "cifar10" / "make_python_batches.py"
    subprocess.run([sys.executable, str(script), str(out), "--tar"], check=True, capture_output=True)
    return out, np.load(shared / "datasets" / "cifar10" / "lossless-and-labels.npz")


@pytest.mark.shared
@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_shared_cifar_python_format(rebuilt_cifar, kind):
    out, reference = rebuilt_cifar
    spec = out if kind == "folder" else out / "cifar-10-python.tar.gz"
    fingerprints = {}
    for split, batches in (("train", BATCHES[:5]), ("test", BATCHES[5:])):
        with pytest.warns(UserWarning, match="not comparable with published"):  # rebuilt JPEG copy
            ds = open_dataset(spec, split)
        assert len(ds) == 10_000 * len(batches) and ds.images.shape[1:] == (32, 32, 3)
        assert ds.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        for b, batch in enumerate(batches):
            rows = slice(10_000 * b, 10_000 * (b + 1))
            np.testing.assert_array_equal(ds.labels[rows], reference[f"{batch}_labels"])
            np.testing.assert_array_equal(ds.images[rows][:1017], reference[f"{batch}_first_images"])
        fingerprints[split] = ds.fingerprint()
    _FINGERPRINTS[kind] = fingerprints


@pytest.mark.shared
def test_shared_folder_and_tar_agree(rebuilt_cifar):
    if len(_FINGERPRINTS) != 2:
        pytest.skip("needs both test_shared_cifar_python_format runs")
    assert _FINGERPRINTS["folder"] == _FINGERPRINTS["tar"]


@pytest.mark.shared
def test_shared_jpeg_zip_test_split(shared, rebuilt_cifar):
    out, _ = rebuilt_cifar
    ds = open_dataset(shared / "datasets" / "cifar10" / "cifar10-jpeg.zip", "test")
    assert len(ds) == 10_000 and ds.format == "class-folders" and ds.class_names[0] == "airplane"
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    with zipfile.ZipFile(shared / "datasets" / "cifar10" / "cifar10-jpeg.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".jpg"))
    assert [ds.class_names[label] for label in ds.labels] == [n.split("/")[1] for n in names]
    # Image k of a class is the k-th of that class in official order; beyond the first 1,017 rows the
    # rebuilt batch holds the same JPEG decoded by Pillow, so the pixels must match exactly.
    with pytest.warns(UserWarning):
        official = open_dataset(out, "test")
    for c in range(10):
        rows = np.flatnonzero(official.labels == c)
        jpeg_rows = rows >= 1017
        np.testing.assert_array_equal(ds.per_class(c).images[jpeg_rows], official.images[rows[jpeg_rows]])
