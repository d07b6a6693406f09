"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentation for GAN training.

The discriminator only ever sees augmented images, real AND generated, and G's loss back-propagates
through the augmentation, so D cannot memorise the training set while G is never pushed to
produce augmented-looking images ("leaking"). The caller applies the same policy to both sides of
the GAN loss, each call drawing its own random parameters::

    d_real = D(diff_augment(real, policy, gen), y_real)
    d_fake = D(diff_augment(G(z, y), policy, gen), y)

Policies (comma-separated, applied in the order written), as in the paper:

* ``color``: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the per-pixel channel mean;
  contrast x U(0.5, 1.5) around the per-image mean.
* ``translation``: integer shift up to 1/8 of the side in x and y, zero padded.
* ``cutout``: one square of half the side set to zero, its centre uniform over the image (it may
  hang over the border).

The paper's CIFAR-10 BigGAN runs use ``translation,cutout`` with 100% of the data and
``color,translation,cutout`` with 10-20%; ``color,translation,cutout`` is their default elsewhere.

Alternatives without ADA's adaptive probability controller, for the record: consistency
regularisation (CR/bCR, Zhang et al. 2020; an extra D pass on augmented reals, ~+50% D cost),
LeCam regularisation (Tseng et al. 2021; a cheap penalty pulling D's outputs towards EMAs of the
other side's, combines with DiffAugment), and APA (Jiang et al. 2021; feeds some fakes as reals).
ADA itself (Karras et al. 2020) applies the same kind of augmentation with probability p tuned
online from D's overfitting; at 50k CIFAR images and a short run, fixed-strength DiffAugment is the
simpler choice and needs no state to save.

Everything is vectorised over the batch (no per-sample Python loop, no host sync), works in any
float dtype (bf16 under autocast included) and any memory format, on CPU and CUDA. Random
parameters come from ``generator`` when given (drawn on the generator's device, then moved), so
a seeded ``torch.Generator`` gives the same augmentation on every device.

torch.compile cannot trace a ``torch.Generator``; a compiled training step either calls
``diff_augment(x, policy)`` without one (the global RNG, seeded by ``torch.manual_seed``), or draws
the numbers eagerly with :func:`draw_params` and passes them to the pure :func:`apply_augment`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distilgan.errors import UserError

TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2
DEFAULT_POLICY = "color,translation,cutout"


def _on(values: Tensor, x: Tensor) -> Tensor:
    return values.to(device=x.device)


def draw_params(
    x: Tensor, policy: str = DEFAULT_POLICY, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """All random numbers ``policy`` needs for the batch ``x``, drawn eagerly.

    Drawn on the generator's device (``x``'s device without one) and moved to ``x``'s device. Kept
    apart from :func:`apply_augment` because torch.compile cannot trace a ``torch.Generator``:
    draw here, outside the compiled step, and pass the tensors in.
    """
    n, _, h, w = x.shape
    device = generator.device if generator is not None else x.device

    def uniform() -> Tensor:  # (N,) floats in [0, 1)
        return _on(torch.rand(n, generator=generator, device=device), x)

    def integers(high: int) -> Tensor:  # (N,) int64 in [0, high)
        return _on(torch.randint(0, high, (n,), generator=generator, device=device), x)

    params: dict[str, Tensor] = {}
    for name in parse_policy(policy):  # the same order as apply_augment, so streams never shift
        if name == "color":
            params["brightness"], params["saturation"], params["contrast"] = uniform(), uniform(), uniform()
        elif name == "translation":
            max_y, max_x = _translation_limits(h, w)
            params["shift_y"] = integers(2 * max_y + 1) - max_y
            params["shift_x"] = integers(2 * max_x + 1) - max_x
        elif name == "cutout":
            size_y, size_x = _cutout_size(h, w)
            # centres in [0, side] for even sizes, [0, side) for odd ones, as in the paper's code
            params["cutout_top"] = integers(h + 1 - size_y % 2) - size_y // 2
            params["cutout_left"] = integers(w + 1 - size_x % 2) - size_x // 2
    return params


def _translation_limits(h: int, w: int) -> tuple[int, int]:
    return int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)


def _cutout_size(h: int, w: int) -> tuple[int, int]:
    return int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    return values.to(x.dtype)[:, None, None, None]


def color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    """brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5); inputs are U(0, 1)."""
    x = x + (_per_sample(brightness, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_per_sample(saturation, x) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_sample(contrast, x) + 0.5) + mean


def translation(x: Tensor, shift_y: Tensor, shift_x: Tensor) -> Tensor:
    """Shift image i by (shift_y[i], shift_x[i]) pixels (|shift| <= 1/8 of the side); zeros come in."""
    n, c, h, w = x.shape
    max_y, max_x = _translation_limits(h, w)
    padded = F.pad(x, (max_x, max_x, max_y, max_y))
    # output row i reads padded row i + max_y - shift_y: a gather along H, then along W (exact, and
    # its backward is a scatter of distinct indices)
    rows = torch.arange(h, device=x.device)[None, :] + (max_y - shift_y)[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + (max_x - shift_x)[:, None]  # (N, W)
    out = torch.gather(padded, 2, rows[:, None, :, None].expand(n, c, h, w + 2 * max_x))
    return torch.gather(out, 3, cols[:, None, None, :].expand(n, c, h, w))


def cutout(x: Tensor, cutout_top: Tensor, cutout_left: Tensor) -> Tensor:
    """Zero a (H/2, W/2) box per image from (top, left); a box may hang over the border."""
    _, _, h, w = x.shape
    size_y, size_x = _cutout_size(h, w)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    inside_y = (ys >= cutout_top[:, None]) & (ys < cutout_top[:, None] + size_y)  # (N, H)
    inside_x = (xs >= cutout_left[:, None]) & (xs < cutout_left[:, None] + size_x)  # (N, W)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])  # (N, H, W)
    return x * keep[:, None].to(x.dtype)


AUGMENTATIONS: dict[str, Callable[..., Tensor]] = {"color": color, "translation": translation, "cutout": cutout}
PARAM_NAMES = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("shift_y", "shift_x"),
    "cutout": ("cutout_top", "cutout_left"),
}


def parse_policy(policy: str) -> list[str]:
    """'color, translation' -> ['color', 'translation']; unknown names are a UserError."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise UserError(
            f"unknown DiffAugment policy '{','.join(unknown)}' "
            f"(use a comma-separated subset of {', '.join(AUGMENTATIONS)}, or an empty policy for none)"
        )
    return names


def apply_augment(x: Tensor, policy: str, params: dict[str, Tensor]) -> Tensor:
    """Apply ``policy`` with the random numbers of :func:`draw_params` (pure; compiles)."""
    for name in parse_policy(policy):
        x = AUGMENTATIONS[name](x, *(params[key] for key in PARAM_NAMES[name]))
    return x


def diff_augment(x: Tensor, policy: str = DEFAULT_POLICY, generator: torch.Generator | None = None) -> Tensor:
    """Augment a batch of NCHW images differentiably; ``policy=""`` returns ``x`` unchanged."""
    if x.dim() != 4:
        raise UserError(f"diff_augment expects NCHW images, got shape {tuple(x.shape)}")
    return apply_augment(x, policy, draw_params(x, policy, generator))
