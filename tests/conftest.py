"""Shared fixtures: the read-only shared data folder and an in-process CLI runner."""

from __future__ import annotations

import os

import pytest

from distilgan.utils.shared_data import shared_dir

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared():
    """The shared data folder (datasets, weights); skips the test with a reason when absent."""
    path = shared_dir()
    if not (path / "README.md").exists():
        pytest.skip(f"shared data folder not found at {path} (set DISTILGAN_SHARED)")
    return path


@pytest.fixture
def cli(capsys):
    """Run ``distilgan ARGS`` in-process; returns (exit_code, stdout, stderr)."""
    from distilgan.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    shared 2-core machine two spinning threads per process cost more than they give."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
