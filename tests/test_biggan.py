"""BigGAN teacher models (sizes, MACs, conditioning, save/load) and DiffAugment."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from distilgan.errors import UserError
from distilgan.models import BigGANDiscriminator, BigGANGenerator, load_pretrained
from distilgan.models.macs import count_macs, count_parameters
from distilgan.train.augment import (
    apply_augment,
    cutout,
    diff_augment,
    draw_params,
    translation,
)

# Stated sizes of the defaults (docs/teacher_plan.md); closed forms are checked below.
G_PARAMS, G_MACS = 4_376_323, 1_615_167_488
D_PARAMS, D_MACS = 4_207_361, 1_068_433_664


def tiny_g(**overrides) -> BigGANGenerator:
    kwargs = dict(z_dim=18, num_classes=3, ch=16, resolution=16, shared_dim=8, class_names=["a", "b", "c"])
    kwargs.update(overrides)
    torch.manual_seed(0)
    return BigGANGenerator(**kwargs)


def tiny_d(**overrides) -> BigGANDiscriminator:
    kwargs = dict(num_classes=3, ch=16, resolution=16)
    kwargs.update(overrides)
    torch.manual_seed(1)
    return BigGANDiscriminator(**kwargs)


# ---------------------------------------------------------------- default sizes


@pytest.fixture(scope="module")
def default_g() -> BigGANGenerator:
    torch.manual_seed(0)
    return BigGANGenerator()


@pytest.fixture(scope="module")
def default_d() -> BigGANDiscriminator:
    torch.manual_seed(0)
    return BigGANDiscriminator()


def test_default_generator_size_and_macs(default_g):
    g = default_g
    counted = count_macs(g)
    print(f"BigGAN G (ch 256): {counted.params:,} parameters, {counted.macs_per_image:,} MACs per image")
    ch, cond, side = 256, 128 + 32, 4
    # shared embedding; z chunk -> 4x4 linear; per block 2 cBN (gain+bias linears), 2 conv3x3, 1x1 shortcut
    block = 2 * 2 * (cond * ch + ch) + 2 * (ch * ch * 9 + ch) + (ch * ch + ch)
    params = 10 * 128 + (32 * ch * side * side + ch * side * side) + 3 * block + 2 * ch + (ch * 3 * 9 + 3)
    macs = 32 * ch * side * side + 6 * 2 * cond * ch + 3 * 32 * 32 * ch * 9
    for out_side in (8, 16, 32):  # conv3x3 x2 at the output side, 1x1 shortcut at the input side
        macs += 2 * out_side**2 * ch * ch * 9 + (out_side // 2) ** 2 * ch * ch
    assert (counted.params, counted.macs_per_image) == (params, macs) == (G_PARAMS, G_MACS)
    assert count_parameters(g) == counted.params
    assert abs(counted.params - 4.3e6) < 0.05 * 4.3e6  # BigGAN C10 size in the literature


def test_default_discriminator_size_and_macs(default_d):
    d = default_d
    counted = count_macs(d)
    print(f"BigGAN D (ch 256): {counted.params:,} parameters, {counted.macs_per_image:,} MACs per image")
    ch, conv = 256, 256 * 256 * 9 + 256
    params = (3 * ch * 9 + ch) + conv + (3 * ch + ch)  # optimised block
    params += 2 * conv + (ch * ch + ch) + 2 * 2 * conv + (ch + 1) + 10 * ch
    macs = 32 * 32 * (3 * ch * 9 + ch * ch * 9) + 16 * 16 * 3 * ch  # block 1 (shortcut after pooling)
    macs += 2 * 16 * 16 * ch * ch * 9 + 8 * 8 * ch * ch  # block 2
    macs += 4 * 8 * 8 * ch * ch * 9 + ch  # blocks 3, 4 and the output linear
    assert (counted.params, counted.macs_per_image) == (params, macs) == (D_PARAMS, D_MACS)
    assert abs(counted.params - 4.2e6) < 0.05 * 4.2e6


def test_default_shapes_and_range(default_g, default_d):
    g, d = default_g.train(), default_d
    images = g(torch.randn(2, 128), torch.tensor([3, 9]))
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1.0
    d.eval()  # in train mode every call also advances spectral norm's power iteration
    logits, features = d(images, torch.tensor([3, 9]), return_features=True)
    assert logits.shape == (2,)
    assert [tuple(f.shape) for f in features] == [(2, 256, 16, 16), (2, 256, 8, 8), (2, 256, 8, 8), (2, 256, 8, 8)]
    assert torch.equal(d(images, torch.tensor([3, 9])), logits)


def test_variants_and_bad_settings():
    plain = BigGANGenerator(ch=16, shared_dim=0, hierarchical=False)  # BigGAN-PyTorch's C10 conditioning
    assert plain(torch.randn(2, 128), torch.tensor([1, 2])).shape == (2, 3, 32, 32)
    assert tiny_g(resolution=64, z_dim=20)(torch.randn(2, 20), torch.tensor([0, 1])).shape == (2, 3, 64, 64)
    with pytest.raises(UserError, match="equal chunks"):
        BigGANGenerator(z_dim=130)
    with pytest.raises(UserError, match="power of two"):
        BigGANGenerator(resolution=48)
    with pytest.raises(UserError, match="class names"):
        BigGANGenerator(class_names=["x"])


# ---------------------------------------------------------------- conditioning


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_generator_output_depends_on_label(mode):
    g = tiny_g().train(mode == "train")
    z = torch.randn(6, 18)
    with torch.no_grad():
        a = g(z, torch.zeros(6, dtype=torch.long))
        b = g(z, torch.ones(6, dtype=torch.long))
    assert (a - b).abs().mean() > 1e-3
    for variant in (tiny_g(shared_dim=0), tiny_g(hierarchical=False)):
        variant.eval()
        with torch.no_grad():
            assert not torch.allclose(variant(z, torch.zeros(6, dtype=torch.long)), variant(z, torch.full((6,), 2)))


def test_soft_labels_match_hard_labels():
    g, d = tiny_g().eval(), tiny_d().eval()
    z, labels = torch.randn(3, 18), torch.tensor([2, 0, 1])
    one_hot = F.one_hot(labels, 3).float()
    with torch.no_grad():
        assert torch.allclose(g(z, labels), g(z, one_hot), atol=1e-6)
        images = torch.rand(3, 3, 16, 16) * 2 - 1
        assert torch.allclose(d(images, labels), d(images, one_hot), atol=1e-5)


def test_discriminator_projection_term_depends_on_label():
    d = tiny_d().eval()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        logits_0 = d(images, torch.zeros(4, dtype=torch.long))
        logits_1 = d(images, torch.ones(4, dtype=torch.long))
        _, features = d(images, torch.zeros(4, dtype=torch.long), return_features=True)
        h = F.relu(features[-1]).sum(dim=(2, 3))
        table = d.embed.weight  # spectrally normalised class embeddings
        # Only the projection <embed(y), h> changes with the label.
        expected = (h * (table[1] - table[0])).sum(dim=1)
    assert (logits_1 - logits_0).abs().min() > 0
    assert torch.allclose(logits_1 - logits_0, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path, cli):
    g = tiny_g()
    g.train()
    g(torch.randn(8, 18), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))  # move BN running stats off their init
    g.eval()
    g.save_pretrained(tmp_path / "g")
    tiny_d().save_pretrained(tmp_path / "d")
    loaded = load_pretrained(tmp_path / "g")
    assert isinstance(loaded, BigGANGenerator) and not loaded.training
    assert loaded.class_names == ["a", "b", "c"] and loaded.config == g.config
    z, labels = torch.randn(3, 18), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(loaded(z, labels), g(z, labels))
    assert isinstance(load_pretrained(tmp_path / "d"), BigGANDiscriminator)
    with pytest.raises(UserError, match="not a BigGANDiscriminator"):
        BigGANDiscriminator.from_pretrained(tmp_path / "g")
    code, out, _ = cli("info", tmp_path / "g")
    assert code == 0 and "BigGANGenerator" in out


# ---------------------------------------------------------------- DiffAugment


def test_diff_augment_gradient_flows():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    weights = torch.randn(4, 3, 16, 16)
    (diff_augment(x, generator=torch.Generator().manual_seed(0)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diff_augment_deterministic_with_seed():
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    a = diff_augment(x, generator=torch.Generator().manual_seed(123))
    b = diff_augment(x, generator=torch.Generator().manual_seed(123))
    c = diff_augment(x, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(diff_augment(x, policy=""), x)


def test_translation_is_a_zero_padded_shift():
    n, side = 32, 32
    x = torch.rand(n, 3, side, side) + 1.0  # strictly positive: zeros can only come from padding
    params = draw_params(x, "translation", torch.Generator().manual_seed(5))
    shift_y, shift_x = params["shift_y"], params["shift_x"]
    assert shift_y.abs().max() <= side // 8 and shift_x.abs().max() <= side // 8
    assert len(set(zip(shift_y.tolist(), shift_x.tolist()))) > 10  # per-sample shifts
    out = translation(x, shift_y, shift_x)
    for i in range(n):  # reference: pad by 4 and crop at the shifted window
        dy, dx = int(shift_y[i]), int(shift_x[i])
        padded = F.pad(x[i], (4, 4, 4, 4))
        assert torch.equal(out[i], padded[:, 4 - dy : 4 - dy + side, 4 - dx : 4 - dx + side])


def test_cutout_zeroes_one_box_of_half_side():
    x = torch.rand(64, 3, 32, 32) + 1.0
    params = draw_params(x, "cutout", torch.Generator().manual_seed(9))
    out = cutout(x, params["cutout_top"], params["cutout_left"])
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert torch.equal(out == 0, (out[:, :1] == 0).expand_as(out))  # same box in every channel
    assert zeros.min() >= 8 * 8 and zeros.max() <= 16 * 16  # a border clips it to a quarter at most
    assert (zeros == 16 * 16).any() and (zeros < 16 * 16).any()
    kept = out != 0
    assert torch.equal(out[kept], x[kept])


def test_draw_then_apply_equals_diff_augment_and_compiles():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    policy = "color,translation,cutout"
    params = draw_params(x, policy, torch.Generator().manual_seed(3))
    expected = diff_augment(x, policy, torch.Generator().manual_seed(3))
    assert torch.equal(apply_augment(x, policy, params), expected)
    explained = torch._dynamo.explain(apply_augment)(x, policy, params)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_diff_augment_bf16_channels_last_and_bad_policy():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    out = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out.float()).all()
    with pytest.raises(UserError, match="unknown DiffAugment policy 'flip'"):
        diff_augment(x, policy="color,flip")


# ---------------------------------------------------------------- training smoke test


def test_two_hinge_steps_with_diff_augment():
    g, d = tiny_g(), tiny_d()
    g.train(), d.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.999))
    gen = torch.Generator().manual_seed(0)
    real, real_labels = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (4,), generator=gen)
    before_g = [p.detach().clone() for p in g.parameters()]
    before_d = [p.detach().clone() for p in d.parameters()]
    for _ in range(2):
        z, labels = torch.randn(4, 18, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        with torch.no_grad():
            fake = g(z, labels)
        loss_d = F.relu(1 - d(diff_augment(real, generator=gen), real_labels)).mean()
        loss_d = loss_d + F.relu(1 + d(diff_augment(fake, generator=gen), labels)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = -d(diff_augment(g(z, labels), generator=gen), labels).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        assert all(p.grad is not None for p in g.parameters())
        opt_g.step()
        assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, g.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, d.parameters()))
