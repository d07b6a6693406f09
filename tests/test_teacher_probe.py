"""Teachers probed with one sample at load (issue 24): a wrong z_dim / num_classes / label encoding of
a TorchScript or Python teacher is one line naming the option, an nn.Module class as CALLABLE (an
untrained network) is refused, and builtin: offers only generators."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from distilgan.errors import UserError
from distilgan.teachers import load_teacher
from distilgan.teachers.builtin import available_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests._teacher_fixtures import make_torchscript_teacher  # noqa: E402


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A traced TinyTeacher (z_dim 8, 3 classes, 8x8): it carries no attributes, so options decide."""
    path = tmp_path_factory.mktemp("probe") / "traced.pt"
    make_torchscript_teacher(path, z_dim=8, num_classes=3, resolution=8, with_attributes=False)
    return path


def refused(spec: str, **options) -> str:
    with pytest.raises(UserError) as caught:
        load_teacher(spec, **options)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.mark.parametrize(
    "options, fragments",
    [
        ({"z_dim": 6, "num_classes": 3}, ["z of shape (1, 6)", "size of tensor a (6)", "z_dim=6"]),
        ({"z_dim": 8, "num_classes": 5}, ["label 4", "out of bounds", "num_classes=5"]),
        ({"z_dim": 8, "num_classes": 3, "label_encoding": "onehot"}, ["label_encoding=onehot"]),
    ],
)
def test_torchscript_wrong_options_fail_at_load_in_one_line(traced: Path, options, fragments) -> None:
    message = refused(f"torchscript:{traced}", **options)
    assert message.startswith(f"torchscript:{traced} failed on a probe sample")
    assert "--teacher-option KEY=VALUE" in message
    for fragment in fragments:
        assert fragment in message, message


def test_torchscript_right_options_and_declared_resolution(traced: Path) -> None:
    teacher = load_teacher(f"torchscript:{traced}", z_dim=8, num_classes=3)
    assert (teacher.resolution, teacher.channels) == (8, 3)
    message = refused(f"torchscript:{traced}", z_dim=8, num_classes=3, resolution=16)
    assert "says resolution=16 but a probe sample has resolution 8" in message
    assert "(1, 3, 8, 8)" in message and "--teacher-option resolution" in message


def test_sample_cli_wrong_z_dim_is_one_line(traced: Path, tmp_path: Path, cli) -> None:
    code, _, err = cli("sample", "--teacher", f"torchscript:{traced}", "--teacher-option", "z_dim=6",
                       "--teacher-option", "num_classes=3", "--out", tmp_path / "set", "--per-class", 2, "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("distilgan: error: "), err
    assert "z_dim=6" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "set").exists()


MODULES = '''
import torch

class Untrained(torch.nn.Module):          # random init: what naming the class builds
    z_dim, num_classes, resolution, channels = 4, 2, 8, 3

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(4, 3 * 64)

    def forward(self, z, labels):
        return torch.tanh(self.w(z)).view(-1, 3, 8, 8)

class Fixed(Untrained):                    # weights that do not depend on the seed (e.g. loaded)
    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.w.weight.copy_(torch.linspace(-1, 1, 4 * 3 * 64).view(3 * 64, 4))
            self.w.bias.zero_()

class Broken(Fixed):
    def forward(self, z, labels):
        return self.w(z[:, :3])

def build():
    return Fixed()
'''


@pytest.fixture
def module_file(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(textwrap.dedent(MODULES))
    return path


def test_python_module_class_with_random_weights_is_refused(module_file: Path) -> None:
    message = refused(f"python:{module_file}:Untrained")
    assert "nn.Module class" in message and "untrained network" in message and "load_state_dict" in message
    for name in ("Fixed", "build"):  # a class with fixed weights, or a factory, is used as given
        teacher = load_teacher(f"python:{module_file}:{name}")
        assert (teacher.z_dim, teacher.resolution) == (4, 8)


def test_python_teacher_failing_the_probe_is_one_line(module_file: Path) -> None:
    message = refused(f"python:{module_file}:Broken")
    assert "failed on a probe sample" in message and "mat1 and mat2" in message and "z_dim=4" in message


def test_builtin_offers_only_generators(tmp_path: Path) -> None:
    names = available_names()
    assert names[0] == "toy" and "cifar10-teacher" in names and "cifar10-student" in names
    assert not any("vgg" in n or "mobilenet" in n or "repvgg" in n or "shufflenet" in n for n in names)
    message = refused("builtin:cifar10-vgg11_bn_x0_25")
    assert "is a classifier, not a generator" in message and "toy" in message
    message = refused("builtin:nope")
    assert "unknown built-in teacher 'nope'" in message and "vgg" not in message
