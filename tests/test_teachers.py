"""Teacher adapters: discovery, exact numbers against the source model, options and errors."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from _teacher_fixtures import make_onnx_teacher, make_torchscript_teacher
from distilgan.errors import UserError
from distilgan.teachers import load_teacher
from distilgan.utils.noise import rng, sample_z


def inputs(n: int = 7, z_dim: int = 8, num_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return sample_z(rng(seed), n, z_dim), np.arange(n, dtype=np.int64) % num_classes


def reference(module: torch.nn.Module, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """What the exported module itself returns, as NCHW numpy."""
    lab = torch.from_numpy(labels)
    if module.onehot:
        lab = torch.nn.functional.one_hot(lab, module.num_classes).float()
    with torch.no_grad():
        out = module(torch.from_numpy(z), lab).numpy()
    return out.transpose(0, 3, 1, 2) if module.nhwc else out


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"label_encoding": "onehot"},
        {"fixed_batch": 4},
        {"nhwc": True},
        {"fixed_batch": 4, "nhwc": True, "label_encoding": "onehot", "resolution": 12, "channels": 1},
    ],
    ids=["int", "onehot", "fixed-batch", "nhwc", "fixed-onehot-nhwc-gray"],
)
def test_onnx_discovers_and_matches_model(tmp_path, kwargs):
    path = tmp_path / "t.onnx"
    module = make_onnx_teacher(path, **kwargs)
    teacher = load_teacher(f"onnx:{path}")
    assert (teacher.z_dim, teacher.num_classes) == (8, 3)
    assert (teacher.resolution, teacher.channels) == (kwargs.get("resolution", 8), kwargs.get("channels", 3))
    info = teacher.describe()
    assert info["onnx"]["label_encoding"] == kwargs.get("label_encoding", "int")
    assert info["onnx"]["layout"] == ("nhwc" if kwargs.get("nhwc") else "nchw")
    assert info["spec"] == f"onnx:{path}" and len(info["fingerprint"]) == 64
    z, labels = inputs(7)  # 7 is not a multiple of a fixed batch of 4: exercises the padding
    out = teacher.generate(z, labels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(module, z, labels), atol=1e-5)
    assert teacher.generate(z[:0], labels[:0]).shape == (0, teacher.channels, teacher.resolution, teacher.resolution)


def test_onnx_small_batch_size_option_gives_same_numbers(tmp_path):
    path = tmp_path / "t.onnx"
    make_onnx_teacher(path)
    z, labels = inputs(9)
    whole = load_teacher(str(path)).generate(z, labels)  # bare .onnx path
    pieces = load_teacher(f"onnx:{path}", batch_size=2, threads=1).generate(z, labels)
    np.testing.assert_allclose(whole, pieces, atol=1e-6)


def test_onnx_output_range_mapping(tmp_path):
    path = tmp_path / "unit.onnx"
    module = make_onnx_teacher(path, output_range=(0.0, 1.0))
    z, labels = inputs(5)
    out = load_teacher(f"onnx:{path}", output_range=(0, 1)).generate(z, labels)
    np.testing.assert_allclose(out, reference(module, z, labels) * 2 - 1, atol=1e-5)
    assert out.min() < -0.05  # really mapped, not passed through


def test_onnx_out_of_range_output_is_a_user_error(tmp_path):
    path = tmp_path / "bytes.onnx"
    make_onnx_teacher(path, output_range=(0.0, 255.0))
    teacher = load_teacher(f"onnx:{path}")  # default range (-1, 1) is wrong for this teacher
    with pytest.raises(UserError, match="output-range"):
        teacher.generate(*inputs(4))
    ok = load_teacher(f"onnx:{path}", output_range=(0, 255)).generate(*inputs(4))
    assert -1.0 <= ok.min() and ok.max() <= 1.0
    clamped = load_teacher(f"onnx:{path}", output_range=(0, 100), clamp=True).generate(*inputs(4))
    assert clamped.max() <= 1.0


def test_onnx_ambiguous_inputs_need_names(tmp_path):
    path = tmp_path / "odd.onnx"
    module = make_onnx_teacher(path, label_encoding="onehot", input_names=("aa", "bb"), z_dim=5)
    with pytest.raises(UserError, match="z_input"):
        load_teacher(f"onnx:{path}")
    teacher = load_teacher(f"onnx:{path}", z_input="aa")
    assert (teacher.z_dim, teacher.num_classes, teacher.label_encoding) == (5, 3, "onehot")
    z, labels = inputs(4, z_dim=5)
    np.testing.assert_allclose(teacher.generate(z, labels), reference(module, z, labels), atol=1e-5)
    assert load_teacher(f"onnx:{path}", z_dim=5).z_input == "aa"  # the size decides too
    with pytest.raises(UserError, match="no input 'zz'"):
        load_teacher(f"onnx:{path}", z_input="zz")


def test_onnx_option_errors(tmp_path):
    path = tmp_path / "t.onnx"
    make_onnx_teacher(path)
    with pytest.raises(UserError, match="contradicts"):
        load_teacher(f"onnx:{path}", num_classes=5)
    with pytest.raises(UserError, match="label_encoding=onehot"):
        load_teacher(f"onnx:{path}", label_encoding="onehot")
    with pytest.raises(UserError, match="unknown option"):
        load_teacher(f"onnx:{path}", z_inptu="z")
    with pytest.raises(UserError, match="no output"):
        load_teacher(f"onnx:{path}", output="nope")
    with pytest.raises(UserError, match="device"):
        load_teacher(f"onnx:{path}", device="tpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match="onnxruntime cannot load"):
        load_teacher(str(garbage))


def test_onnx_metadata_gives_class_names(tmp_path):
    import json

    import onnx

    path = tmp_path / "meta.onnx"
    make_onnx_teacher(path)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"class_names": json.dumps(["x", "y", "z"]), "num_classes": "3"})
    onnx.save(model, str(path))
    assert load_teacher(f"onnx:{path}").class_names == ["x", "y", "z"]
    assert load_teacher(f"onnx:{path}", class_names="p, q, r").class_names == ["p", "q", "r"]


def test_onnx_unconditional_and_int32_labels(tmp_path):
    import warnings

    class Unconditional(torch.nn.Module):
        def forward(self, z):
            return torch.tanh(z[:, :3, None, None].expand(-1, 3, 4, 4))

    class Int32Labels(torch.nn.Module):  # labels used through one_hot: no embedding table to read
        def forward(self, z, c):
            onehot = torch.nn.functional.one_hot(c.long(), 4).float()
            return torch.tanh(z[:, :3, None, None].expand(-1, 3, 4, 4) + onehot[:, :3, None, None])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Unconditional(), (torch.randn(2, 5),), str(tmp_path / "u.onnx"), dynamo=False,
                          input_names=["z"], output_names=["x"], dynamic_axes={"z": {0: "b"}, "x": {0: "b"}})
        torch.onnx.export(Int32Labels(), (torch.randn(2, 5), torch.zeros(2, dtype=torch.int32)),
                          str(tmp_path / "i.onnx"), dynamo=False, input_names=["noise", "y"], output_names=["x"],
                          dynamic_axes={"noise": {0: "b"}, "y": {0: "b"}, "x": {0: "b"}})
    z = sample_z(rng(0), 3, 5)
    teacher = load_teacher(f"onnx:{tmp_path / 'u.onnx'}")
    assert (teacher.num_classes, teacher.resolution, teacher.channels) == (1, 4, 3)
    np.testing.assert_allclose(teacher.generate(z, np.zeros(3, np.int64))[:, :, 1, 2], np.tanh(z[:, :3]), atol=1e-6)
    with pytest.raises(UserError, match="give num_classes"):
        load_teacher(f"onnx:{tmp_path / 'i.onnx'}")
    teacher = load_teacher(f"onnx:{tmp_path / 'i.onnx'}", num_classes=4)
    out = teacher.generate(z, np.array([0, 1, 3]))
    np.testing.assert_allclose(out[:, :, 0, 0], np.tanh(z[:, :3] + np.eye(4)[[0, 1, 3], :3]), atol=1e-6)


def test_label_and_z_errors(tmp_path):
    path = tmp_path / "t.onnx"
    make_onnx_teacher(path)
    teacher = load_teacher(f"onnx:{path}")
    z, labels = inputs(4)
    with pytest.raises(UserError, match="outside the teacher's classes"):
        teacher.generate(z, labels + 3)
    with pytest.raises(UserError, match="outside"):
        teacher.generate(z, labels - 1)
    with pytest.raises(UserError, match="expects"):
        teacher.generate(z[:, :5], labels)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("onnx:{tmp}/missing.onnx", "not found"),
        ("torchscript:{tmp}/missing.pt", "not found"),
        ("{tmp}/missing.onnx", "not found"),
        ("python:{tmp}/missing.py:build", "not found"),
        ("python:no_such_module_xyz:build", "cannot import"),
        ("python:just_a_module", "MODULE:CALLABLE"),
        ("stylegan2-ada:{tmp}/missing.pkl", "not found"),
        ("distilgan:{tmp}/nothing", "not found"),
        ("hf:some/model", "unknown teacher scheme"),
        ("{tmp}/what.bin", "cannot tell"),
        ("builtin:nope", "available: toy"),
    ],
)
def test_bad_specs_are_user_errors(tmp_path, spec, match):
    with pytest.raises(UserError, match=match):
        load_teacher(spec.format(tmp=tmp_path))


# ---------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("encoding", ["int", "onehot"])
def test_torchscript_scripted_reads_attributes(tmp_path, encoding):
    path = tmp_path / "t.pt"
    module = make_torchscript_teacher(path, z_dim=6, num_classes=4, resolution=8, label_encoding=encoding)
    teacher = load_teacher(str(path), label_encoding=encoding)  # bare .pt path -> torchscript
    assert teacher.spec == f"torchscript:{path}"
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution, teacher.channels) == (6, 4, 8, 3)
    z, labels = inputs(5, z_dim=6, num_classes=4)
    np.testing.assert_allclose(teacher.generate(z, labels), reference(module, z, labels), atol=1e-6)


def test_torchscript_traced_needs_options_and_probes(tmp_path):
    path = tmp_path / "traced.pt"
    module = make_torchscript_teacher(path, resolution=12, channels=1, output_range=(0, 1), with_attributes=False)
    with pytest.raises(UserError, match="z_dim"):
        load_teacher(f"torchscript:{path}")
    teacher = load_teacher(f"torchscript:{path}", z_dim=8, num_classes=3, output_range=(0, 1), batch_size=3)
    assert (teacher.resolution, teacher.channels) == (12, 1)  # probed
    z, labels = inputs(7)
    np.testing.assert_allclose(teacher.generate(z, labels), reference(module, z, labels) * 2 - 1, atol=1e-5)
    with pytest.raises(UserError, match="resolution=16 but a probe"):
        load_teacher(f"torchscript:{path}", z_dim=8, num_classes=3, resolution=16)


def test_torchscript_rejects_non_torchscript_file(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="not a TorchScript file"):
        load_teacher(str(path))


# ---------------------------------------------------------------- python:


PY_TEACHER = """
import numpy as np
import torch

class Gen(torch.nn.Module):
    z_dim = 4
    num_classes = 2
    resolution = {res}
    channels = {channels}
    class_names = ["cat", "dog"]

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1, 1, 4 * 3 * 8 * 8).view(4, -1) * {scale})

    def forward(self, z, labels):
        x = torch.tanh(z @ self.w).view(-1, 3, 8, 8)
        return x * (1 - 2 * labels.view(-1, 1, 1, 1).float())


def build():
    return Gen()


class NumpyTeacher:
    z_dim, num_classes, resolution, channels = 3, 5, 4, 1

    def __call__(self, z, labels):
        assert isinstance(z, np.ndarray) and labels.dtype == np.int64
        return np.tile(np.tanh(z.sum(1) + labels)[:, None, None, None], (1, 1, 4, 4))


numpy_teacher = NumpyTeacher()
"""


def write_module(tmp_path, res: int = 8, scale: float = 1.0, channels: object = 3):
    path = tmp_path / "my_teacher.py"
    path.write_text(textwrap.dedent(PY_TEACHER.format(res=res, scale=scale, channels=channels)))
    return path


def test_python_factory_module_file(tmp_path):
    path = write_module(tmp_path)
    teacher = load_teacher(f"python:{path}:build")
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution, teacher.channels) == (4, 2, 8, 3)
    assert teacher.class_names == ["cat", "dog"]
    z, labels = inputs(6, z_dim=4, num_classes=2)
    out = teacher.generate(z, labels)
    expected = np.tanh(z @ np.linspace(-1, 1, 4 * 3 * 64, dtype=np.float32).reshape(4, -1)).reshape(-1, 3, 8, 8)
    expected *= (1 - 2 * labels)[:, None, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    fingerprint = teacher.fingerprint()
    assert fingerprint == load_teacher(f"python:{path}:build").fingerprint()
    write_module(tmp_path, scale=0.5)
    assert load_teacher(f"python:{path}:build").fingerprint() != fingerprint  # weights are in it


def test_python_object_with_numpy_io_and_by_module_name(tmp_path, monkeypatch):
    write_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher = load_teacher("python:my_teacher:numpy_teacher")
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution, teacher.channels) == (3, 5, 4, 1)
    z, labels = inputs(4, z_dim=3, num_classes=5)
    expected = np.tanh(z.sum(1) + labels)
    np.testing.assert_allclose(teacher.generate(z, labels)[:, 0, 2, 1], expected, atol=1e-6)
    with pytest.raises(UserError, match="no attribute"):
        load_teacher("python:my_teacher:missing")
    with pytest.raises(UserError, match="class names"):
        load_teacher("python:my_teacher:numpy_teacher", class_names="a,b")
    sys.modules.pop("my_teacher", None)


def test_python_wrong_output_shape_is_a_user_error(tmp_path):
    path = write_module(tmp_path, res=16)  # claims 16x16, returns 8x8: the probe sample at load catches it
    with pytest.raises(UserError, match="says resolution=16 but a probe sample has resolution 8"):
        load_teacher(f"python:{path}:build")
    teacher = load_teacher(f"python:{write_module(tmp_path)}:build")
    teacher.resolution = 16  # a teacher changing its output after load still fails at generate
    with pytest.raises(UserError, match="returned images of shape"):
        teacher.generate(*inputs(2, z_dim=4, num_classes=2))
    path = write_module(tmp_path, res=16, channels=None)  # no channels: the same probe
    with pytest.raises(UserError, match="says resolution=16 but a probe sample has resolution 8"):
        load_teacher(f"python:{path}:build")


# ---------------------------------------------------------------- stylegan2-ada (fake NVIDIA code)

FAKE_LEGACY = """
import json
import torch


class FakeG(torch.nn.Module):
    def __init__(self, z_dim, c_dim, img_resolution, img_channels):
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        self.calls.append(dict(psi=truncation_psi, c=c.clone(), **synthesis_kwargs))
        level = truncation_psi * 1.5 * torch.tanh(z.sum(1) + 3 * c.argmax(1) if self.c_dim else z.sum(1))
        n, r = z.shape[0], self.img_resolution
        return level.view(n, 1, 1, 1).expand(n, self.img_channels, r, r) * self.w


def load_network_pkl(f):
    cfg = json.loads(f.read().decode())
    return {"G": None, "D": None, "G_ema": FakeG(**cfg)}
"""


@pytest.fixture(scope="module")
def fake_stylegan_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("stylegan2-ada-pytorch")
    (repo / "legacy.py").write_text(textwrap.dedent(FAKE_LEGACY))
    (repo / "dnnlib").mkdir()
    (repo / "dnnlib" / "__init__.py").write_text("")
    yield repo
    sys.modules.pop("legacy", None)
    if str(repo) in sys.path:
        sys.path.remove(str(repo))


def write_pkl(tmp_path, **cfg) -> str:
    path = tmp_path / "network.pkl"
    config = {"z_dim": 6, "c_dim": 4, "img_resolution": 8, "img_channels": 3, **cfg}
    path.write_text(__import__("json").dumps(config))
    return str(path)


def test_stylegan2_ada_without_repo_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("STYLEGAN2_ADA_REPO", raising=False)
    pkl = write_pkl(tmp_path)
    with pytest.raises(UserError, match="git clone https://github.com/NVlabs/stylegan2-ada-pytorch.*STYLEGAN2_ADA_REPO"):
        load_teacher(f"stylegan2-ada:{pkl}")
    with pytest.raises(UserError, match="not a checkout"):
        load_teacher(f"stylegan2-ada:{pkl}", repo=str(tmp_path))


def test_stylegan2_ada_with_fake_nvidia_code(tmp_path, monkeypatch, fake_stylegan_repo):
    monkeypatch.setenv("STYLEGAN2_ADA_REPO", str(fake_stylegan_repo))
    pkl = write_pkl(tmp_path)
    teacher = load_teacher(pkl, truncation=0.5, batch_size=3)  # bare .pkl -> stylegan2-ada
    assert teacher.spec == f"stylegan2-ada:{pkl}"
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution, teacher.channels) == (6, 4, 8, 3)
    assert teacher.native_truncation and teacher.describe()["truncation"] == 0.5
    z, labels = inputs(7, z_dim=6, num_classes=4)
    out = teacher.generate(z, labels)
    calls = teacher.G.calls
    assert len(calls) == 3 and all(c["psi"] == 0.5 and c["noise_mode"] == "const" and c["force_fp32"] for c in calls)
    np.testing.assert_array_equal(calls[0]["c"].argmax(1).numpy(), labels[:3])  # one-hot classes
    expected = np.clip(0.75 * np.tanh(z.sum(1) + 3 * labels), -1, 1)
    np.testing.assert_allclose(out[:, 2, 3, 4], expected, atol=1e-5)

    loud = load_teacher(f"stylegan2-ada:{pkl}", repo=str(fake_stylegan_repo), noise_mode="none", clamp=False)
    with pytest.raises(UserError, match="outside its declared range"):  # 1.5 * tanh exceeds [-1, 1]
        loud.generate(z, labels)
    assert loud.G.calls[-1]["noise_mode"] == "none" and loud.G.calls[-1]["psi"] == 1.0
    with pytest.raises(UserError, match="noise_mode"):
        load_teacher(f"stylegan2-ada:{pkl}", noise_mode="loud")
    with pytest.raises(UserError, match="no 'G' network"):
        load_teacher(f"stylegan2-ada:{pkl}", network="G")  # the fake pickle holds G=None
    unconditional = load_teacher(f"stylegan2-ada:{write_pkl(tmp_path, c_dim=0)}")
    assert unconditional.num_classes == 1
    assert unconditional.generate(z[:2], np.zeros(2, np.int64)).shape == (2, 3, 8, 8)


# ---------------------------------------------------------------- distilgan checkpoint


def tiny_checkpoint(folder):
    from distilgan.models import DiStyleGANGenerator

    torch.manual_seed(0)
    model = DiStyleGANGenerator(z_dim=8, num_classes=3, project_dim=8, ngf=16, resolution=8,
                                class_names=["a", "b", "c"])
    model.save_pretrained(folder)
    return model.eval()


def test_distilgan_checkpoint_teacher(tmp_path):
    folder = tmp_path / "ckpt"
    model = tiny_checkpoint(folder)
    for spec in (str(folder), f"distilgan:{folder}"):
        teacher = load_teacher(spec)
        assert teacher.spec == f"distilgan:{folder}"
        assert (teacher.z_dim, teacher.num_classes, teacher.resolution, teacher.channels) == (8, 3, 8, 3)
        assert teacher.class_names == ["a", "b", "c"] and not teacher.native_truncation
        z, labels = inputs(5)
        with torch.no_grad():
            expected = model(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
        np.testing.assert_allclose(teacher.generate(z, labels), expected, atol=1e-5)
    assert len(teacher.fingerprint()) == 64
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_teacher(f"distilgan:{tmp_path / 'empty'}")


# ---------------------------------------------------------------- builtin:toy


def test_toy_is_deterministic_and_batch_independent():
    z, labels = inputs(300, z_dim=64, num_classes=10)
    first = load_teacher("builtin:toy").generate(z, labels)
    again = load_teacher("builtin:toy").generate(z, labels)
    np.testing.assert_array_equal(first, again)
    pieces = np.concatenate([load_teacher("builtin:toy").generate(z[i : i + 7], labels[i : i + 7]) for i in range(0, 300, 7)])
    np.testing.assert_allclose(first, pieces, atol=1e-5)
    assert first.shape == (300, 3, 32, 32) and first.min() >= -1 and first.max() <= 1
    assert load_teacher("builtin:toy").fingerprint() == load_teacher("builtin:toy").fingerprint()


def test_toy_classes_are_distinct_and_z_matters():
    teacher = load_teacher("builtin:toy", resolution=16)
    assert (teacher.z_dim, teacher.num_classes, teacher.resolution) == (64, 10, 16)
    assert teacher.class_names[0] == "airplane" and teacher.class_names[9] == "truck"
    n = 50
    z = sample_z(rng(3), n, 64)
    per_class = np.stack([teacher.generate(z, np.full(n, c, np.int64)) for c in range(10)])  # (10, n, 3, H, W)
    means = per_class.mean(axis=1).reshape(10, -1)
    within = np.sqrt(((per_class.reshape(10, n, -1) - means[:, None]) ** 2).sum(-1)).mean()
    between = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1))
    assert between[~np.eye(10, dtype=bool)].min() > 1.5 * within  # classes far apart relative to spread
    # nearest class mean classifies every image correctly
    flat = per_class.reshape(10 * n, -1)
    predicted = np.argmin(((flat[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == np.repeat(np.arange(10), n)).all()
    assert within > 0.5  # z really changes the picture
    # smooth in z: a small step in z changes little
    step = teacher.generate(z[:10] + 0.01, np.zeros(10, np.int64)) - per_class[0, :10]
    assert np.abs(step).max() < 0.05
    assert load_teacher("builtin:toy", resolution=16).fingerprint() != load_teacher("builtin:toy").fingerprint()
    with pytest.raises(UserError, match="resolution"):
        load_teacher("builtin:toy", resolution=4)
