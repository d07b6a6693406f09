"""The one progress factory: plain lines (no carriage return) when stderr is not a terminal, a tqdm
bar when it is, nothing under --quiet / DISTILGAN_QUIET; and --quiet on every long command."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from distilgan.models import DiStyleGANGenerator
from distilgan.utils import progress as progress_module
from distilgan.utils.progress import LineProgress, progress_bar, set_quiet

PACKAGE = Path(progress_module.__file__).resolve().parents[1]
LONG_COMMANDS = ("sample", "distill", "train-teacher", "eval", "stats", "generate", "tsne", "calibrate",
                 "train-classifier", "export", "bench", "prune", "qat", "verify", "demo", "gif", "pairs", "distill-i2i",
                 "train-encoder", "translate", "invert")


@pytest.fixture(autouse=True)
def loud(monkeypatch):
    """Every test starts un-quiet and leaves the switch as it found it."""
    monkeypatch.delenv(progress_module.QUIET_ENV, raising=False)
    set_quiet(False)
    yield
    set_quiet(False)


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_progress_is_plain_lines(capsys):
    assert list(progress_bar(range(50), desc="work", unit="img")) == list(range(50))
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err  # no redraws, no cursor codes: a log stays readable
    lines = err.strip().splitlines()
    assert len(lines) == 10  # one per 10 %
    assert all(line.startswith("work: ") for line in lines)
    assert lines[0].startswith("work: 5/50 img (10%)") and "50/50 img (100%)" in lines[-1]
    assert "elapsed" in lines[-1] and "img/s" in lines[-1]


def test_manual_updates_postfix_and_close(capsys):
    with progress_bar(total=4, desc="steps", unit="step") as bar:
        assert isinstance(bar, LineProgress)
        bar.update(1)
        bar.set_postfix({"loss": "0.5"})
        bar.update(1)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("steps: 1/4 step (25%)") and "eta" in err[0]
    assert err[-1].startswith("steps: 2/4 step (50%)") and err[-1].endswith("loss=0.5")
    assert len(err) == 2  # closing at 2/4, already reported, adds nothing


def test_unknown_total_reports_by_time_and_resumes_from_initial():
    stream = io.StringIO()
    bar = LineProgress(total=None, desc="bytes", unit="B", every_seconds=0, stream=stream)
    bar.update(3)
    bar.update(4)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["bytes: 3 B", "bytes: 7 B"]  # every update, no percent
    assert "\r" not in stream.getvalue()
    resumed = LineProgress(total=10, initial=6, desc="r", stream=io.StringIO())
    resumed.update(1)
    assert "7/10" in resumed.stream.getvalue() and "(70%)" in resumed.stream.getvalue()


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr("sys.stderr", TerminalStream())
    bar = progress_bar(range(3), desc="tty")
    assert isinstance(bar, tqdm) and not bar.disable
    assert list(bar) == [0, 1, 2]


@pytest.mark.parametrize("how", ["switch", "env"])
def test_quiet_shows_nothing(capsys, monkeypatch, how):
    if how == "switch":
        set_quiet(True)
    else:
        monkeypatch.setenv("DISTILGAN_QUIET", "1")
    assert sum(progress_bar(range(20), desc="x")) == sum(range(20))
    with progress_bar(total=5, desc="y") as bar:
        bar.update(5)
        bar.set_postfix(a=1)
    assert capsys.readouterr().err == ""


def test_disable_is_respected(capsys):
    list(progress_bar(range(5), desc="off", disable=True))
    assert capsys.readouterr().err == ""


def test_no_module_builds_tqdm_itself():
    """Every bar goes through utils/progress.py, so --quiet and log mode reach all of them."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "progress.py" and path.parent.name == "utils":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from tqdm|import tqdm)", text, re.M) or re.search(r"(?<![\w.])tqdm\(", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_every_long_command_has_quiet():
    from distilgan.cli import build_parser

    parser = build_parser()
    commands = parser.commands  # name -> sub-parser
    for name in LONG_COMMANDS:
        assert "--quiet" in commands[name]._option_string_actions, name


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    g = DiStyleGANGenerator(z_dim=16, num_classes=3, project_dim=8, ngf=32, resolution=16, class_names=["a", "b", "c"])
    folder = tmp_path_factory.mktemp("progress") / "student"
    g.eval().save_pretrained(folder)
    return folder


def test_cli_progress_is_log_friendly_and_quiet_silences_it(cli, checkpoint, tmp_path):
    code, out, err = cli("generate", "--checkpoint", checkpoint, "--n", 300, "--batch-size", 32, "--out", tmp_path / "a")
    assert code == 0, err
    assert "\r" not in err and re.search(r"^generate: \d+/10 batch", err, re.M) and re.search(r"^write: 300/300 png", err, re.M)
    code, out, err = cli("generate", "--checkpoint", checkpoint, "--n", 300, "--batch-size", 32, "--out", tmp_path / "b",
                         "--quiet")
    assert code == 0 and err == "" and "wrote 300 images" in out  # results still print
    code, _, err = cli("generate", "--checkpoint", checkpoint, "--n", 300, "--batch-size", 32, "--out", tmp_path / "c")
    assert code == 0 and "generate: " in err  # a quiet run does not silence the next one


def test_warnings_of_distilgan_become_note_lines(capsys, recwarn):
    import warnings

    from distilgan.utils.progress import warnings_as_notes

    ours = compile("import warnings\nwarnings.warn('copy is not official', UserWarning)", str(PACKAGE / "data" / "x.py"), "exec")
    with warnings_as_notes():
        exec(ours, {})
        warnings.warn("someone else's warning", UserWarning)  # from this test file: not ours
    err = capsys.readouterr().err
    assert "distilgan: note: copy is not official\n" in err
    # other packages' warnings keep Python's own handling (here: pytest's recorder), not a note
    assert "someone else" not in err and [str(w.message) for w in recwarn] == ["someone else's warning"]
