"""Models record their constructor arguments once (register_to_config), and renamed architectures still load."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distilgan.models import ARCHITECTURES, DiStyleGANGenerator, load_pretrained
from distilgan.models.pretrained import PretrainedMixin, register_to_config


class Base(PretrainedMixin, nn.Module):
    @register_to_config
    def __init__(self, width: int = 4, name: str | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)
        self._config_override(name=(name or "default").upper())  # a normalised value


class Wider(Base):
    @register_to_config
    def __init__(self, width: int = 8, name: str | None = None, depth: int = 2) -> None:
        super().__init__(width, name)  # the inner decorated __init__ does not overwrite the outer record


def test_every_argument_is_recorded_once_with_defaults_and_overrides():
    assert Base().config == {"architecture": "Base", "width": 4, "name": "DEFAULT"}
    assert Base(6, name="x").config == {"architecture": "Base", "width": 6, "name": "X"}
    assert Wider(depth=3).config == {"architecture": "Wider", "width": 8, "name": "DEFAULT", "depth": 3}
    model = Base()
    model._config_override(name="LATER")  # after construction it edits the config itself
    assert model.config["name"] == "LATER"


def test_a_pruned_student_is_the_student_with_widths_and_old_checkpoints_load(tmp_path):
    torch.manual_seed(0)
    model = DiStyleGANGenerator(z_dim=8, num_classes=2, project_dim=8, ngf=16, resolution=16, widths=[12, 6, 3]).eval()
    assert [block[1].out_channels // 2 for block in model.up] == [6, 3] and model.config["widths"] == [12, 6, 3]
    model.save_pretrained(tmp_path / "new")
    # what the former PrunedDiStyleGANGenerator wrote: its own architecture name
    old = tmp_path / "old"
    model.save_pretrained(old)
    config = json.loads((old / "config.json").read_text())
    config["architecture"] = "PrunedDiStyleGANGenerator"
    (old / "config.json").write_text(json.dumps(config))
    z, labels = torch.randn(3, 8), torch.tensor([0, 1, 0])
    for folder in (tmp_path / "new", old):
        for loaded in (load_pretrained(folder), DiStyleGANGenerator.from_pretrained(folder)):
            assert type(loaded) is DiStyleGANGenerator and loaded.widths == [12, 6, 3]
            torch.testing.assert_close(loaded(z, labels), model(z, labels))
    assert ARCHITECTURES["PrunedDiStyleGANGenerator"] is DiStyleGANGenerator
    with pytest.raises(Exception, match="widths"):
        DiStyleGANGenerator(ngf=16, resolution=16, widths=[8, 4])  # one width per stage: 3 here


def test_one_registry_loads_classifiers_too(tmp_path):
    from distilgan.models.classifiers import CifarResNet, load_classifier

    CifarResNet(depth=8, num_classes=3).save_pretrained(tmp_path / "c")
    assert type(load_pretrained(tmp_path / "c")) is CifarResNet is type(load_classifier(tmp_path / "c"))
    DiStyleGANGenerator(z_dim=8, ngf=16, resolution=8).save_pretrained(tmp_path / "g")
    with pytest.raises(Exception, match="not a classifier"):
        load_classifier(tmp_path / "g")
