"""A tower's folder on disk (recutils.checkpoint): what is written is read back, and only by its own model."""

import json

import pytest
import torch
from torch import nn

from recutils.checkpoint import read_checkpoint, save_checkpoint


class Net(nn.Module):
    def __init__(self, frozen):
        super().__init__()
        self.register_buffer("item_text", frozen)
        self.layer = nn.Linear(2, 2)


CONFIG = {"hidden": 8, "optimizer": "adam"}


def _saved(folder, net, early=None, config=CONFIG):
    meta = {"config": config, "train_fingerprint": "abc", "log": {"loss": [1.0]}}
    return save_checkpoint(folder, {"model": net, "validation_model": early}, meta)


def _read(folder, frozen, config=CONFIG, fingerprint="abc", later=None):
    inputs = {"item_text": ("item vectors", frozen), "user_text": ("user vectors", None)}
    return read_checkpoint(folder, "test", config, fingerprint, later or {}, inputs)


def test_what_is_saved_is_read_back(tmp_path):
    frozen = torch.ones(3, 2)
    net = Net(frozen)
    assert _saved(tmp_path / "entry", net) == tmp_path / "entry"
    assert sorted(p.name for p in (tmp_path / "entry").iterdir()) == ["config.json", "model.safetensors"]
    meta, state = _read(tmp_path / "entry", frozen)
    assert meta["log"] == {"loss": [1.0]} and torch.equal(state["layer.weight"], net.layer.weight)
    _saved(tmp_path / "both", net, early=Net(frozen))
    assert (tmp_path / "both" / "validation_model.safetensors").is_file()


def test_a_field_added_later_reads_as_its_default(tmp_path):
    frozen = torch.ones(3, 2)
    _saved(tmp_path, Net(frozen), config={"hidden": 8})
    _read(tmp_path, frozen, later={"optimizer": "adam"})
    with pytest.raises(ValueError, match=r"another config \(optimizer: saved None, here 'adam'\)"):
        _read(tmp_path, frozen)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    frozen = torch.ones(3, 2)
    with pytest.raises(FileNotFoundError, match="no test checkpoint in .* \\(model.safetensors and config.json\\)"):
        _read(tmp_path, frozen)
    _saved(tmp_path, Net(frozen))
    with pytest.raises(ValueError, match="another config \\(hidden: saved 8, here 16\\)"):
        _read(tmp_path, frozen, config={**CONFIG, "hidden": 16})
    with pytest.raises(ValueError, match="other interactions"):
        _read(tmp_path, frozen, fingerprint="xyz")
    with pytest.raises(ValueError, match="other item vectors"):
        _read(tmp_path, frozen + 1)
    broken = Net(frozen)
    broken.layer.weight.data[0, 0] = float("nan")
    _saved(tmp_path, broken)
    with pytest.raises(ValueError, match="NaN or infinite weights in \\['layer.weight'\\]"):
        _read(tmp_path, frozen)
    assert json.loads((tmp_path / "config.json").read_text())["train_fingerprint"] == "abc"
