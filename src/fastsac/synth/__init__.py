"""Physically grounded HAADF-STEM simulator of single-atom catalysts with exact truth.

Stands beside the pipeline: it may use :mod:`fastsac.io` to write files, and
no pipeline stage imports it. See ``docs/synth.md``.

* :func:`simulate` – one frame and its :class:`SimulationTruth`;
* :class:`SimulationParams` – every parameter, defaults tuned to ptnc-train;
* :func:`demo_image` – the example used by ``fastsac demo``;
* :func:`write_montage` – huge tiled BigTIFF/Zarr montages with bounded memory.
"""

from .elements import ELEMENTS, Element, element
from .params import SimulationParams
from .simulate import SimulationTruth, demo_image, simulate
from .montage import write_montage, MontageResult

__all__ = ["simulate", "SimulationParams", "SimulationTruth", "demo_image", "write_montage",
           "MontageResult", "ELEMENTS", "Element", "element"]
