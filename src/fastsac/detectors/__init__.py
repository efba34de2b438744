"""Atom detectors: from a micrograph to a table of sub-pixel atom positions.

Every detector produces a *score map* (classical: matched-filter signal-to-noise;
learned: heatmap or probability) and shares the same post-processing: local
maxima → non-maximum suppression → sub-pixel refinement on the raw image
(:mod:`fastsac.detectors.base`).

:func:`get_detector` is the registry: ``"default"`` (the best cross-validated
detector, today the classical one), ``"classical"``, ``"heatmap"`` (fastsac's
learned U-Net), ``"rescore"`` (classical candidates + learned re-scorer) or a
checkpoint path.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FastsacInputError
from .base import Detections, Detector, as_micrograph, postprocess_scores
from .classical import ClassicalDetector

__all__ = ["Detections", "Detector", "ClassicalDetector", "get_detector", "postprocess_scores",
           "as_micrograph"]


def get_detector(spec="default", **params) -> Detector:
    """Resolve a detector from a name, a checkpoint path or a Detector instance.

    ``"default"``: the detector with the best cross-validated F1 on real
    labelled images — today :class:`ClassicalDetector` (leave-one-image-out
    pooled F1 0.695 on ptnc-train, against 0.691 for the two-stage re-scorer,
    0.585 (4-fold) for fastsac's heatmap U-Net and 0.605 for the published
    SAC-CNN; docs/model.md). ``"classical"``: the same, explicitly.
    ``"heatmap"``: fastsac's shipped learned heatmap detector. ``"rescore"``:
    :class:`fastsac.detectors.rescore.RescoreDetector` with the shipped re-scorer. A
    path: a checkpoint recognised by its keys (the published SAC-CNN, or a
    fastsac model; ``.json``: a re-scorer). Extra keyword arguments go to the
    detector (e.g. ``threshold``).
    """
    if isinstance(spec, Detector):
        return spec
    if spec is None or spec in ("default", "classical"):
        return ClassicalDetector(**params)
    if spec == "heatmap":
        from .learned import default_detector

        det = default_detector(**params)
        if det is None:
            raise FastsacInputError("fastsac/weights", "the shipped heatmap model's weights are "
                                                      "not installed; reinstall fastsac")
        return det
    if spec == "rescore":
        from .rescore import default_rescore

        det = default_rescore(**params)
        if det is None:
            raise FastsacInputError("fastsac/weights", "the shipped re-scorer is not installed; "
                                                      "reinstall fastsac")
        return det
    path = Path(os.fspath(spec))
    if path.suffix == ".json":
        if not path.is_file():
            raise FastsacInputError(path, "re-scorer file not found")
        from .rescore import load_rescore

        return load_rescore(path, **params)
    if path.suffix in (".ckpt", ".pt", ".pth") or path.exists():
        if not path.is_file():
            raise FastsacInputError(path, "detector checkpoint not found")
        from .learned import load_detector

        return load_detector(path, **params)
    raise ValueError(f"detector must be 'default', 'classical', 'heatmap', 'rescore' or a checkpoint path, "
                     f"got {spec!r}")
