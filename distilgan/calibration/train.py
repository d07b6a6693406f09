"""Train a zoo classifier on a real dataset: SGD + momentum, cosine LR, crop + flip, resumable.

Layout of a run folder ``OUT``:
    OUT/model/          the classifier (config.json + model.safetensors), rewritten every epoch
    OUT/state/state.pt  optimiser, epoch, RNG streams (torch.load(weights_only=True)) for --resume
    OUT/history.json    per-epoch loss, LR, train/test accuracy and the settings of the run

The whole training split lives on the device as uint8; augmentation is done there in torch:
4-pixel zero padding + random 32x32 crop, and a horizontal flip with probability 1/2 (the
standard CIFAR recipe). Every random draw comes from one seeded torch.Generator saved in the state,
so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distilgan.errors import UserError
from distilgan.utils.atomic import atomic_write_json


def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """uint8 NHWC batch -> randomly cropped (zero padding) and flipped uint8 NHWC batch."""
    n, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2), (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(images.device)
    flip = (torch.rand(n, generator=gen, device=gen.device) < 0.5).to(images.device)
    rows = dy[:, None] + torch.arange(h, device=images.device)
    cols = dx[:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is reversed column order
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def to_input(classifier: Any, images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC tensor -> normalised float NCHW (same mapping as ``utils.images.uint8_to_float``)."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return classifier.normalize(x)


@torch.no_grad()
def evaluate(classifier: Any, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy (percent) of the torch classifier."""
    classifier.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = classifier(to_input(classifier, images[start : start + batch_size]))
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return 100.0 * correct / max(len(images), 1)


def train_classifier(
    classifier: Any,
    train: Any,
    test: Any,
    out: str | Path,
    epochs: int = 200,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    device: Any = "cpu",
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``classifier`` on ``train`` (ImageDataset), report accuracy on ``test`` every epoch."""
    from distilgan.models.pretrained import parse_device
    from distilgan.train.state import capture_rng, load_state, restore_rng, save_state
    from distilgan.utils.progress import progress_bar

    out = Path(out)
    state_path = out / "state" / "state.pt"
    if state_path.exists() and not resume:
        raise UserError(f"{out} already holds a training run (pass --resume to continue it, or choose another --out)")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise UserError(f"epochs, batch size and lr must be positive (got {epochs}, {batch_size}, {lr})")
    if not 0 <= label_smoothing < 1:
        raise UserError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    for split in (train, test):
        if split.resolution != classifier.resolution or split.num_classes != classifier.num_classes:
            raise UserError(
                f"{split.source} ({split.split}) has {split.num_classes} classes at {split.resolution}px, the classifier "
                f"expects {classifier.num_classes} at {classifier.resolution}px (pick matching data or --num-classes)"
            )
    dev = parse_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # channels_last: oneDNN's NHWC kernels train these nets 1.3-1.7x faster on CPU (measured)
    classifier.to(dev, memory_format=torch.channels_last)
    train_x = torch.from_numpy(np.ascontiguousarray(train.images)).to(dev)
    train_y = torch.from_numpy(train.labels).to(dev)
    test_x = torch.from_numpy(np.ascontiguousarray(test.images)).to(dev)
    test_y = torch.from_numpy(test.labels).to(dev)

    # no weight decay on BN and biases (1-d parameters), the usual practice
    decay = [p for p in classifier.parameters() if p.ndim > 1]
    no_decay = [p for p in classifier.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, momentum=momentum, nesterov=True,
    )
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    total_steps = epochs * steps_per_epoch
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                "label_smoothing": label_smoothing, "seed": seed, "train": train.describe(), "test": test.describe(),
                "schedule": "cosine per step to 0, SGD nesterov", "augmentation": "pad 4 + random crop, flip 0.5"}
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and state_path.exists():
        state = load_state(state_path, map_location=dev)
        classifier.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], {"data": gen})
        start_epoch, history = int(state["epoch"]), list(state["history"])
        print(f"resuming {out} at epoch {start_epoch}/{epochs}")

    for epoch in range(start_epoch, epochs):
        classifier.train()
        order = torch.randperm(len(train_x), generator=gen).to(dev)
        loss_sum, correct, seen, t0 = 0.0, 0, 0, time.time()
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="step", disable=not progress, leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total_steps))
            index = order[i * batch_size : (i + 1) * batch_size]
            x = to_input(classifier, augment(train_x[index], gen)).contiguous(memory_format=torch.channels_last)
            logits = classifier(x)
            loss = F.cross_entropy(logits, train_y[index], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == train_y[index]).sum())
            seen += len(index)
        test_acc = evaluate(classifier, test_x, test_y)
        record = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": 100.0 * correct / seen,
                  "test_accuracy": test_acc, "lr_end": optimizer.param_groups[0]["lr"], "seconds": time.time() - t0}
        history.append(record)
        print(f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} train {record['train_accuracy']:.2f}% "
              f"test {test_acc:.2f}% ({record['seconds']:.0f} s)", flush=True)
        classifier.save_pretrained(out / "model", metadata={"test_accuracy": test_acc, "epoch": epoch + 1, **settings})
        save_state({"model": classifier.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                    "history": history, "rng": capture_rng({"data": gen})}, state_path)
        atomic_write_json(out / "history.json", {"settings": settings, "history": history})
    final = history[-1] if history else {}
    return {"test_accuracy": final.get("test_accuracy"), "epochs": len(history), "model": str(out / "model")}
