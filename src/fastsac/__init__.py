"""fastsac: fast, quantitative analysis of single-atom catalysts in HAADF-STEM images.

The pipeline is a chain of plain functions over numpy arrays, one module per
stage: :mod:`fastsac.io` → :mod:`fastsac.preprocess` → :mod:`fastsac.models` /
:mod:`fastsac.infer` → :mod:`fastsac.peaks` → :mod:`fastsac.species` →
:mod:`fastsac.spatial` → :mod:`fastsac.evaluate` → :mod:`fastsac.report`.
:mod:`fastsac.synth` (the simulator) stands beside it.

Importing fastsac never needs CUDA, cupy or numba-cuda.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fastsac")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0+src"

from .errors import FastsacInputError
from .io import Micrograph, read, read_points

__all__ = ["__version__", "FastsacInputError", "Micrograph", "read", "read_points"]
