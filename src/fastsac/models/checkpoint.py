"""Reading and writing model checkpoints.

Two kinds are recognised by their keys, never by file name:

* the published SAC-CNN (``{"state_dict": {features.*, fc_layers.*, fc3.*}, ...}``);
* fastsac's own (``{"format": "fastsac-model", "version": 1, "arch": ..., "state_dict": ...,
  "detector": {...}, "meta": {...}}``).

Checkpoints are loaded with ``torch.load(weights_only=True)``: no code in a
checkpoint is ever executed, and nothing is fetched from the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FastsacInputError
from ..io import atomic_path
from .sac_cnn import BasicCNN, is_sac_cnn_state_dict
from .unet import HeatmapUNet

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "build_heatmap_model", "FASTSAC_FORMAT"]

FASTSAC_FORMAT = "fastsac-model"
_ARCHS = {"heatmap_unet": HeatmapUNet}


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model. ``kind`` is ``"sac_cnn"`` or ``"fastsac"``."""

    kind: str
    model: torch.nn.Module
    arch: dict = field(default_factory=dict)
    detector: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    path: str | None = None


def build_heatmap_model(arch: dict) -> torch.nn.Module:
    name = arch.get("name", "heatmap_unet")
    if name not in _ARCHS:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(_ARCHS)}")
    return _ARCHS[name](widths=tuple(arch.get("widths", (8, 16, 32))))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a SAC-CNN or fastsac checkpoint, recognised by its keys.

    Raises
    ------
    FastsacInputError
        The file is missing, not a torch checkpoint, or neither kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FastsacInputError(path, "model checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime)
        raise FastsacInputError(path, f"not a readable torch checkpoint ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(obj, dict):
        raise FastsacInputError(path, f"checkpoint holds a {type(obj).__name__}, expected a dict")
    if obj.get("format") == FASTSAC_FORMAT:
        try:
            model = build_heatmap_model(dict(obj["arch"]))
            model.load_state_dict(obj["state_dict"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise FastsacInputError(path, f"broken fastsac checkpoint ({exc})") from exc
        return Checkpoint("fastsac", model.eval(), dict(obj["arch"]), dict(obj.get("detector", {})),
                          dict(obj.get("meta", {})), os.fspath(path))
    sd = obj.get("state_dict", obj)
    if is_sac_cnn_state_dict(sd):
        model = BasicCNN()
        try:
            model.load_state_dict(sd)
        except RuntimeError as exc:
            raise FastsacInputError(path, f"SAC-CNN weights do not fit BasicCNN ({exc})") from exc
        meta = {"epoch": int(obj["epoch"])} if isinstance(obj.get("epoch"), int) else {}
        return Checkpoint("sac_cnn", model.eval(), {"name": "sac_cnn_basic"}, {}, meta, os.fspath(path))
    keys = sorted(obj)[:8]
    raise FastsacInputError(path, "not a recognised detector checkpoint: expected the published "
                                  "SAC-CNN (state_dict with features.*/fc_layers.*/fc3.*) or a fastsac "
                                  f"model (format={FASTSAC_FORMAT!r}); top-level keys {keys}")


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, arch: dict,
                    detector: dict, meta: dict) -> Path:
    """Write a fastsac checkpoint atomically (float32 weights, JSON-able metadata)."""
    obj = {"format": FASTSAC_FORMAT, "version": 1, "arch": arch,
           "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
           "detector": detector, "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
