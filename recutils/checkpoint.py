"""Trained towers on disk: weights (safetensors) and a ``config.json`` in one folder, checked when read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from recutils.cache import atomic_path


def save_checkpoint(
    folder: str | Path, nets: Mapping[str, nn.Module | None], meta: Mapping[str, object]
) -> Path:
    """Write ``{name}.safetensors`` for every network given (None: skipped), then ``config.json``
    holding ``meta``, into ``folder`` (created if missing); each file is written beside itself
    and renamed (:func:`~recutils.cache.atomic_path`). Returns: ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, net in nets.items():
        if net is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            with atomic_path(folder / f"{name}.safetensors") as partial:
                save_file(state, partial)
    with atomic_path(folder / "config.json") as partial:
        partial.write_text(json.dumps(meta, indent=1))
    return folder


def read_checkpoint(
    folder: Path,
    kind: str,
    config: Mapping[str, object],
    train_fingerprint: str,
    later_fields: Mapping[str, object],
    inputs: Mapping[str, tuple[str, torch.Tensor | None]],
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata and ``model.safetensors`` weights that :func:`save_checkpoint` wrote, once
    they are shown to belong to this model.

    Args:
        kind: the model's name in messages ("two-tower").
        config: the model's settings; a saved config that lacks one of ``later_fields`` (a
            field added later) is read as holding that field's default.
        train_fingerprint: the fingerprint of the interactions the model is fitted on.
        inputs: buffer name -> (what it holds, the tensor this model has, or None to skip):
            frozen inputs the saved weights must equal.
    Raises:
        FileNotFoundError: ``model.safetensors`` or ``config.json`` is missing.
        ValueError: another config, other interactions, other inputs, or non-finite weights.
    """
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no {kind} checkpoint in {folder} (model.safetensors and config.json)")
    meta = json.loads((folder / "config.json").read_text())
    saved = meta["config"]
    differs = {
        k: (saved.get(k, later_fields.get(k)), v)
        for k, v in config.items()
        if saved.get(k, later_fields.get(k)) != v
    }
    if differs:
        detail = ", ".join(f"{k}: saved {a!r}, here {b!r}" for k, (a, b) in differs.items())
        raise ValueError(f"checkpoint {folder} was made with another config ({detail})")
    if meta["train_fingerprint"] != train_fingerprint:
        raise ValueError(f"checkpoint {folder} was trained on other interactions than the ones given")
    state = load_file(folder / "model.safetensors")
    broken = [name for name, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"checkpoint {folder} holds NaN or infinite weights in {broken[:3]}")
    for buffer, (what, given) in inputs.items():
        if given is not None and not torch.equal(state[buffer], given):
            raise ValueError(f"checkpoint {folder} was trained on other {what} than the ones given")
    return meta, state
