"""DiStyleGAN student models: sizes, MACs, shapes, save/load round trips and load errors."""

from __future__ import annotations

import json

import pytest
import torch

from distilgan.errors import UserError
from distilgan.models import (
    DiStyleGANDiscriminator,
    DiStyleGANGenerator,
    load_pretrained,
)
from distilgan.models.macs import count_macs, count_parameters

REFERENCE_G_PARAMS = 2_054_368  # GSoC 2022 DiStyleGAN generator, CIFAR-10 defaults


def tiny_generator(**overrides) -> DiStyleGANGenerator:
    kwargs = dict(z_dim=16, num_classes=3, project_dim=8, ngf=32, resolution=16, channels=3, class_names=["a", "b", "c"])
    kwargs.update(overrides)
    return DiStyleGANGenerator(**kwargs)


@pytest.fixture(scope="module")
def default_g() -> DiStyleGANGenerator:
    torch.manual_seed(0)
    return DiStyleGANGenerator()


def test_default_generator_parameters_match_reference(default_g):
    params = count_parameters(default_g)
    print(f"default DiStyleGAN G parameters: {params:,}")
    assert abs(params - REFERENCE_G_PARAMS) <= 0.01 * REFERENCE_G_PARAMS
    assert params == REFERENCE_G_PARAMS  # our layout reproduces the reference exactly


def test_default_generator_macs(default_g):
    counted = count_macs(default_g)
    # Independent closed form, weight multiplies only: two linears, three up-block convs
    # (3x3, output 2*c_out channels at 8, 16, 32 px), final 3x3 conv to RGB at 32 px.
    expected = (
        512 * 256
        + 138 * 8192
        + 8 * 8 * 256 * 256 * 9
        + 16 * 16 * 128 * 128 * 9
        + 32 * 32 * 64 * 64 * 9
        + 32 * 32 * 3 * 32 * 9
    )
    print(f"default DiStyleGAN G MACs per image: {counted.macs_per_image:,}")
    assert counted.macs_per_image == expected
    # "about 115 M": the closed form is 115.39 M; allow 1% for what other counters include.
    assert abs(counted.macs_per_image - 115e6) <= 0.01 * 115e6
    # Batch size does not change a per-image count.
    z, labels = torch.zeros(4, 512), torch.arange(4)
    assert count_macs(default_g, z, labels).macs_per_image == expected


def test_default_generator_forward(default_g):
    default_g.eval()
    with torch.no_grad():
        images = default_g(torch.randn(3, 512), torch.tensor([0, 4, 9]))
    assert images.shape == (3, 3, 32, 32)
    assert images.abs().max() <= 1.0


def test_default_discriminator_features():
    torch.manual_seed(0)
    d = DiStyleGANDiscriminator()
    logits, features = d(torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([1, 7]))
    assert logits.shape == (2,)
    assert [tuple(f.shape) for f in features] == [(2, 128, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    # Gradients reach the images (needed by the feature and adversarial losses).
    images = torch.zeros(2, 3, 32, 32, requires_grad=True)
    d(images, torch.tensor([0, 1]))[0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("resolution,channels", [(16, 3), (64, 3), (32, 1), (16, 1)])
def test_other_resolutions_and_channels(resolution, channels):
    torch.manual_seed(0)
    g = tiny_generator(resolution=resolution, channels=channels).eval()
    d = DiStyleGANDiscriminator(num_classes=3, project_dim=8, ndf=8, resolution=resolution, channels=channels)
    with torch.no_grad():
        images = g(torch.randn(2, 16), torch.tensor([0, 2]))
        logits, features = d(images, torch.tensor([0, 2]))
    assert images.shape == (2, channels, resolution, resolution)
    assert logits.shape == (2,)
    sides = [resolution // 2, resolution // 4, resolution // 8, resolution // 16]
    assert [tuple(f.shape[1:]) for f in features] == [(c, s, s) for c, s in zip([8, 8, 16, 32], sides)]
    assert g.config["resolution"] == resolution and g.config["channels"] == channels


def test_labels_one_hot_equals_indices():
    torch.manual_seed(0)
    g = tiny_generator().eval()
    z, labels = torch.randn(3, 16), torch.tensor([2, 0, 1])
    with torch.no_grad():
        assert torch.equal(g(z, labels), g(z, torch.nn.functional.one_hot(labels, 3).float()))


@pytest.mark.parametrize(
    "kwargs",
    [dict(resolution=24), dict(resolution=4), dict(ngf=10, resolution=16), dict(class_names=["a", "b"]), dict(num_classes=0, class_names=None)],
)
def test_bad_generator_settings_are_user_errors(kwargs):
    with pytest.raises(UserError):
        tiny_generator(**kwargs)


def test_discriminator_needs_16_pixels():
    with pytest.raises(UserError, match="power of two >= 16"):
        DiStyleGANDiscriminator(resolution=8)


def _train_a_little(g: DiStyleGANGenerator) -> None:
    # Move BN running stats away from their init so the round trip really covers buffers.
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(8, g.z_dim), torch.randint(0, g.num_classes, (8,)))
    g.eval()


def test_save_load_round_trip_identical(tmp_path):
    torch.manual_seed(0)
    g = tiny_generator()
    _train_a_little(g)
    g.save_pretrained(tmp_path / "g", metadata={"steps": 3})
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["architecture"] == "DiStyleGANGenerator" and config["class_names"] == ["a", "b", "c"]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["config.json", "model.safetensors"]

    z, labels = torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        before = g(z, labels)
        for loaded in (DiStyleGANGenerator.from_pretrained(tmp_path / "g"), load_pretrained(str(tmp_path / "g"))):
            assert not loaded.training
            assert loaded.class_names == ["a", "b", "c"] and loaded.metadata == {"steps": 3}
            assert torch.equal(loaded(z, labels), before)


def test_fp16_save_is_smaller_and_close(tmp_path):
    torch.manual_seed(0)
    g = tiny_generator()
    _train_a_little(g)
    g.save_pretrained(tmp_path / "fp32")
    g.save_pretrained(tmp_path / "fp16", dtype="fp16")
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    loaded = load_pretrained(tmp_path / "fp16")
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["weights_dtype"] == "float16"
    assert next(loaded.parameters()).dtype == torch.float32  # cast back on load
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.allclose(loaded(z, labels), g(z, labels), atol=1e-2)


def test_discriminator_round_trip(tmp_path):
    torch.manual_seed(0)
    d = DiStyleGANDiscriminator(num_classes=3, project_dim=8, ndf=8, resolution=16).eval()
    d.save_pretrained(tmp_path / "d")
    loaded = load_pretrained(tmp_path / "d")
    images, labels = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(loaded(images, labels)[0], d(images, labels)[0])
    with pytest.raises(UserError, match="not a DiStyleGANGenerator"):
        DiStyleGANGenerator.from_pretrained(tmp_path / "d")


@pytest.fixture
def saved_tiny(tmp_path):
    torch.manual_seed(0)
    tiny_generator().save_pretrained(tmp_path / "g")
    return tmp_path / "g"


def test_corrupt_safetensors_is_user_error(saved_tiny):
    weights = saved_tiny / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt"):
        load_pretrained(saved_tiny)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="corrupt"):
        load_pretrained(saved_tiny)


def test_missing_files_are_user_errors(saved_tiny, tmp_path):
    (saved_tiny / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors is missing"):
        load_pretrained(saved_tiny)
    (saved_tiny / "config.json").unlink()
    with pytest.raises(UserError, match="config.json is missing"):
        load_pretrained(saved_tiny)
    with pytest.raises(UserError, match="none shipped yet|built-in name"):
        load_pretrained(tmp_path / "does-not-exist")
    with pytest.raises(UserError, match="built-in name"):
        load_pretrained("no-such-builtin-model")


def test_config_not_matching_weights_is_user_error(saved_tiny):
    config_path = saved_tiny / "config.json"
    config = json.loads(config_path.read_text())
    config["ngf"] = 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not match the weights") as err:
        load_pretrained(saved_tiny)
    assert "\n" not in str(err.value)
    config["ngf"], config["bogus"] = 32, 1
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="bogus"):
        load_pretrained(saved_tiny)
    config.pop("bogus")
    config["architecture"] = "BigGAN"
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="unknown architecture 'BigGAN'"):
        load_pretrained(saved_tiny)
    config_path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_pretrained(saved_tiny)


def test_save_over_existing_folder_replaces_it(saved_tiny):
    torch.manual_seed(1)
    other = tiny_generator(class_names=["x", "y", "z"])
    other.save_pretrained(saved_tiny)
    assert load_pretrained(saved_tiny).class_names == ["x", "y", "z"]
    assert not any(p.name.startswith((".tmp-", ".old-")) for p in saved_tiny.parent.iterdir())


def test_small_map_matmul_equals_the_convolution():
    """The training-time unfold+matmul path of D's last block gives the convolution's outputs and gradients."""
    torch.manual_seed(0)
    D = DiStyleGANDiscriminator(ndf=16).train()
    images, labels = torch.rand(6, 3, 32, 32) * 2 - 1, torch.arange(6) % 10
    outputs = {}
    for matmul in (True, False):
        for module in D.modules():
            if hasattr(module, "matmul_small_maps"):
                module.matmul_small_maps = matmul
        D.zero_grad()
        x = images.clone().requires_grad_()
        # parametrizations.spectral_norm runs a power iteration per training forward: fix u, v first
        with torch.nn.utils.parametrize.cached():
            logits, features = D(x, labels)
            (logits.square().sum() + sum(f.abs().mean() for f in features)).backward()
        outputs[matmul] = (logits.detach(), features[-1].detach(), x.grad, [p.grad.clone() for p in D.parameters()])
        assert features[-1].shape == (6, 64, 2, 2)
    (l1, f1, g1, p1), (l0, f0, g0, p0) = outputs[True], outputs[False]
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f1, f0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-6)
    for a, b in zip(p1, p0):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    keys = set(D.state_dict())
    assert "blocks.3.0.parametrizations.weight.original" in keys  # same keys as a plain Conv2d
