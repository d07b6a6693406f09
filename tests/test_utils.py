"""The shared utilities every part relies on: quantisation, noise streams, atomic writes, grids."""

from __future__ import annotations

import os

import numpy as np
import pytest

from distilgan.utils.atomic import atomic_dir, atomic_path, atomic_write_json
from distilgan.utils.images import float_to_uint8, make_grid, uint8_to_float
from distilgan.utils.noise import balanced_labels, rng, sample_z


def test_quantisation_is_the_documented_formula():
    x = np.array([-1.5, -1.0, -0.99, 0.0, 1.0 / 255, 0.5, 1.0, 1.3], np.float32)
    # round((x + 1) * 127.5), clamped; 0.0 -> 127.5 rounds half to even -> 128
    np.testing.assert_array_equal(float_to_uint8(x), [0, 0, 1, 128, 128, 191, 255, 255])
    u = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(float_to_uint8(uint8_to_float(u)), u)  # exact round trip


def test_noise_streams_are_deterministic_and_independent():
    a = sample_z(rng(7, 0), 4, 16)
    assert a.dtype == np.float32 and a.shape == (4, 16)
    np.testing.assert_array_equal(a, sample_z(rng(7, 0), 4, 16))
    assert not np.array_equal(a, sample_z(rng(7, 1), 4, 16))
    t = sample_z(rng(1), 1000, 8, truncation=0.5)
    assert np.abs(t).max() <= 0.5
    with pytest.raises(ValueError):
        sample_z(rng(1), 1, 1, truncation=0)


def test_balanced_labels_interleave_classes():
    np.testing.assert_array_equal(balanced_labels(0, 7, [3, 5]), [3, 5, 3, 5, 3, 5, 3])
    np.testing.assert_array_equal(balanced_labels(5, 7, [3, 5]), [5, 3])


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
    assert os.stat(target).st_mode & 0o044  # readable by others, not mkstemp's private 0600


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_make_grid_places_images_row_major():
    images = np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(5)])
    grid = make_grid(images, nrow=3, padding=1, pad_value=255)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == 1 and grid[4, 1, 0] == 3 and grid[4, 7, 0] == 255
