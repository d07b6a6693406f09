"""The user-facing API: load a trained student and make images.

    from distilgan import StudentGenerator
    g = StudentGenerator.from_pretrained("runs/cifar10/generator", device="cpu")
    images = g.generate(["cat", "dog", 3], seed=0)            # list of PIL images
    array = g.generate(["cat"] * 8, seed=1, output="np")      # uint8 (8, H, W, C)

z comes from ``distilgan.utils.noise`` seeded by ``seed`` alone and is drawn for the whole label
list at once, so the same (labels, seed, truncation) gives the same images whatever the batch size;
``seeds=[...]`` (one per label) draws each image's z from its own seed instead.
By default z follows the distribution the model was trained on (``g.z_distribution``, from its
config.json) and labels must be among its trained classes (``g.classes``); ``truncation`` /
``truncation_kind`` override the distribution.

    from distilgan.pipeline import ImageTranslator
    t = ImageTranslator.from_pretrained("runs/i2i/generator")
    trucks = t.translate(car_images, edit="automobile:truck")   # PIL in, PIL out

``ImageTranslator`` runs an image-to-image student (models/translator.py): PIL images, a uint8 NHWC
array or a float NCHW tensor in [-1, 1] in, the same conversions as StudentGenerator's out.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

from distilgan.errors import UserError
from distilgan.utils.images import fit_pil, float_to_uint8, nchw_to_nhwc, nhwc_to_nchw, uint8_to_float  # noqa: F401  (fit_pil: part of this API)
from distilgan.utils.labels import label_indices
from distilgan.utils.latent import choose_distribution, model_classes, model_z_distribution
from distilgan.utils.noise import ZDistribution, rng

OUTPUTS = ("pil", "np", "pt")
P = TypeVar("P", bound="_Pipeline")


class _Pipeline:
    """What the user-facing wrappers share: loading any saved model by name or folder, its image size
    and device. A subclass checks in ``__init__`` that the model is of its kind."""

    model: torch.nn.Module

    @classmethod
    def from_pretrained(cls: type[P], name_or_dir: str | os.PathLike, device: Any = "cpu") -> P:
        from distilgan.models import load_pretrained

        return cls(load_pretrained(name_or_dir, device=device))  # type: ignore[call-arg]

    @property
    def resolution(self) -> int:
        return int(self.model.resolution)

    @property
    def channels(self) -> int:
        return int(self.model.channels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class StudentGenerator(_Pipeline):
    """A class-conditional generator in eval mode with label-name lookup and seeded sampling."""

    def __init__(self, model: torch.nn.Module) -> None:
        for attribute in ("z_dim", "num_classes", "resolution", "channels"):
            if not hasattr(model, attribute):
                raise UserError(f"{type(model).__name__} is not a generator (it has no {attribute}); load a generator checkpoint")
        self.model = model.eval()

    @property
    def z_dim(self) -> int:
        return int(self.model.z_dim)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def class_names(self) -> list[str]:
        """The checkpoint's class names, or "0", "1", ... when it was saved without names."""
        names = getattr(self.model, "class_names", None)
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    @property
    def classes(self) -> list[int]:
        """The classes the model was trained on, in label order (all of them unless a subset was)."""
        return model_classes(self.model)

    @property
    def z_distribution(self) -> ZDistribution:
        """The z distribution the model was trained on: what ``generate`` samples by default."""
        return model_z_distribution(self.model)

    def z_distribution_for(self, truncation: float | None = None, truncation_kind: str | None = None) -> ZDistribution:
        """The distribution a call with these overrides samples (None, None: the model's own)."""
        return choose_distribution(self.z_distribution, truncation, truncation_kind)

    def label_indices(self, labels: Sequence[int | str] | int | str) -> np.ndarray:
        """Class names or indices (ints or digit strings) -> int64 indices, checked against the model
        and its trained classes."""
        return label_indices(labels, self.class_names, allowed=self.classes)

    def sample(
        self,
        labels: Sequence[int | str] | int | str,
        seed: int = 0,
        truncation: float | None = None,
        batch_size: int = 256,
        progress: bool = False,
        truncation_kind: str | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """-> (float NCHW images in [-1, 1] on the model's device, int64 labels, float32 z).

        ``truncation`` None and ``truncation_kind`` None: z from the model's own distribution; see
        :meth:`z_distribution_for` for the overrides. ``seeds`` (one per label) replaces ``seed``:
        image i then comes from ``seeds[i]`` alone, so it can be made again without the others."""
        from distilgan.utils.progress import progress_bar
        from distilgan.utils.seeds import z_for_seeds

        indices = self.label_indices(labels)
        distribution = self.z_distribution_for(truncation, truncation_kind)
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if seeds is None:
            z = distribution.sample(rng(seed), len(indices), self.z_dim)
        elif len(seeds) != len(indices):
            raise UserError(f"{len(seeds)} seeds for {len(indices)} labels: give one seed per label")
        else:
            z = z_for_seeds(distribution, seeds, self.z_dim)
            # One forward pass per image: kernels chosen for another batch shape can move a pixel by
            # one quantisation step, and an image of a seed list must be the same when made alone.
            batch_size = 1
        device = self.device
        chunks = []
        steps = range(0, len(indices), batch_size)
        with torch.inference_mode():
            for start in progress_bar(steps, desc="generate", unit="batch", disable=not progress or len(steps) < 2):
                z_batch = torch.from_numpy(z[start : start + batch_size]).to(device)
                label_batch = torch.from_numpy(indices[start : start + batch_size]).to(device)
                chunks.append(self.model(z_batch, label_batch).float())
        return torch.cat(chunks), indices, z

    def generate(
        self,
        labels: Sequence[int | str] | int | str,
        seed: int = 0,
        truncation: float | None = None,
        output: str = "pil",
        batch_size: int = 256,
        truncation_kind: str | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Any:
        """One image per label. output: "pil" (list of PIL images), "np" (uint8 NHWC array) or
        "pt" (float NCHW tensor in [-1, 1], on the model's device). ``truncation=None``: the model's
        own z distribution; a number sets its threshold (``truncation_kind`` its kind). ``seeds``:
        one seed per label instead of ``seed`` (image i from ``seeds[i]`` alone)."""
        if output not in OUTPUTS:
            raise UserError(f"unknown output '{output}' (use one of {', '.join(OUTPUTS)})")
        images, _, _ = self.sample(labels, seed=seed, truncation=truncation, batch_size=batch_size,
                                   truncation_kind=truncation_kind, seeds=seeds)
        if output == "pt":
            return images
        array = to_uint8_nhwc(images)
        if output == "np":
            return array
        return to_pil(array)

    def __repr__(self) -> str:
        return (
            f"StudentGenerator({type(self.model).__name__}, {self.resolution}x{self.resolution}x{self.channels}, "
            f"{self.num_classes} classes, z_dim={self.z_dim}, z {self.z_distribution.describe()}, device={self.device})"
        )



class ImageTranslator(_Pipeline):
    """An image-to-image translator (``UNetTranslator``) in eval mode, with edit-name lookup and conversions."""

    def __init__(self, model: torch.nn.Module) -> None:
        if not hasattr(model, "num_edits") or not hasattr(model, "edit_index") or hasattr(model, "z_dim"):
            raise UserError(f"{type(model).__name__} is not an image translator; load a translator checkpoint (e.g. RUN/generator of distill-i2i)")
        self.model = model.eval()

    @property
    def num_edits(self) -> int:
        return int(self.model.num_edits)

    @property
    def edits(self) -> list[str]:
        """The edit names, in index order ("0", "1", ... when it was saved without names)."""
        return list(self.model.edit_names)

    def edit_index(self, edit: int | str) -> int:
        """An edit's index from its index, name or an unambiguous short form (see UNetTranslator.edit_index)."""
        return int(self.model.edit_index(edit))

    def edit_indices(self, edit: Any, n: int) -> np.ndarray:
        """None (only for a one-edit translator), one edit, or one edit per image -> int64 (n,)."""
        if edit is None:
            if self.num_edits > 1:
                raise UserError(f"this translator does {self.num_edits} edits; choose one with edit= ({', '.join(self.edits)})")
            return np.zeros(n, dtype=np.int64)
        if isinstance(edit, (str, int, np.integer)):
            return np.full(n, self.edit_index(edit), dtype=np.int64)
        chosen = [self.edit_index(e) for e in edit]
        if len(chosen) != n:
            raise UserError(f"{len(chosen)} edits for {n} images: give one edit, or one per image")
        return np.asarray(chosen, dtype=np.int64)

    def to_tensor(self, images: Any, resize: bool = False) -> torch.Tensor:
        """PIL image(s), uint8 NHWC array or float NCHW tensor -> float NCHW in [-1, 1] on the model's device."""
        size, c = self.resolution, self.channels
        if isinstance(images, torch.Tensor):
            if not images.is_floating_point() or images.dim() != 4 or tuple(images.shape[1:]) != (c, size, size):
                raise UserError(f"a tensor of {images.dtype} {tuple(images.shape)} given; give float (N, {c}, {size}, {size}) in [-1, 1]")
            return images.to(self.device, torch.float32)
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, c):
                raise UserError(f"an array of {images.dtype} {images.shape} given; give uint8 (N, {size}, {size}, {c}) (NHWC)")
            array = images
        else:
            many = images if isinstance(images, (list, tuple)) else [images]
            if not many:
                raise UserError("no images given")
            array = np.stack([fit_pil(image, size, c, resize=resize, where=f"images[{i}]") for i, image in enumerate(many)])
        return torch.from_numpy(nhwc_to_nchw(uint8_to_float(array))).to(self.device)

    def translate(self, images: Any, edit: Any = None, output: str = "pil", batch_size: int = 64, resize: bool = False) -> Any:
        """Apply ``edit`` (name or index; one per image also works) to ``images``.

        images: a PIL image, a list of them, a uint8 NHWC array or a float NCHW tensor in [-1, 1].
        output: "pil" (a list of PIL images; one image for one PIL image in), "np" (uint8 NHWC) or
        "pt" (float NCHW in [-1, 1] on the model's device). PIL images of another size are refused
        unless ``resize`` (area downscaling, bicubic upscaling); their mode is converted to the
        model's channels."""
        if output not in OUTPUTS:
            raise UserError(f"unknown output '{output}' (use one of {', '.join(OUTPUTS)})")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        x = self.to_tensor(images, resize=resize)
        edits = torch.from_numpy(self.edit_indices(edit, len(x))).to(self.device)
        with torch.inference_mode():
            y = torch.cat([self.model(x[s : s + batch_size], edits[s : s + batch_size]).float()
                           for s in range(0, len(x), batch_size)])
        if output == "pt":
            return y
        array = to_uint8_nhwc(y)
        if output == "np":
            return array
        pil = to_pil(array)
        return pil[0] if _is_pil(images) else pil

    def translate_uint8(self, batch: np.ndarray, edit: int | str | None = None) -> np.ndarray:
        """uint8 NHWC -> uint8 NHWC: the batch function the ``translate`` command runs."""
        return self.translate(batch, edit=edit, output="np", batch_size=max(1, len(batch)))

    def __repr__(self) -> str:
        return (f"ImageTranslator({type(self.model).__name__}, {self.resolution}x{self.resolution}x{self.channels}, "
                f"edits {', '.join(self.edits)}, device={self.device})")


def _is_pil(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """Float NCHW [-1, 1] tensor -> uint8 NHWC array via the project's one quantisation."""
    return nchw_to_nhwc(float_to_uint8(images.detach().cpu().numpy()))


def to_pil(array: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(image[..., 0] if image.shape[2] == 1 else image) for image in array]
