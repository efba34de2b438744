"""Public simulator API: :func:`simulate`, :func:`demo_image`, :class:`SimulationTruth`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .params import SimulationParams
from .render import Field, to_dtype

__all__ = ["simulate", "demo_image", "SimulationTruth", "truth_from_field"]


@dataclass(frozen=True)
class SimulationTruth:
    """Exact ground truth of one simulated image.

    Attributes
    ----------
    xy : (N, 2) float64
        Atom positions in the image, [x, y] = [column, row] px (pixel centres
        at integers): where the noise-free intensity peaks.
    element : (N,) str
        Element symbol per atom.
    cluster_id : (N,) int64
        Unit each atom belongs to (single atoms have their own id; dimers,
        trimers and nanoclusters share one).
    cluster_size : (N,) int64
        Number of atoms in that unit.
    parent_id : (N,) int64
        Thomas/Matérn cluster of the unit (−1 for other patterns).
    support_area_nm2 : float
        Support area of the image available to atoms (vacuum excluded).
    params : dict
        Every parameter used (``SimulationParams.as_dict()``).
    """

    xy: np.ndarray
    element: np.ndarray
    cluster_id: np.ndarray
    cluster_size: np.ndarray
    parent_id: np.ndarray
    support_area_nm2: float
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def loading_per_nm2(self) -> float:
        """Atoms per nm² of support."""
        return len(self.xy) / self.support_area_nm2 if self.support_area_nm2 else float("nan")

    def to_frame(self):
        """pandas DataFrame with columns ``X, Y, element, cluster_id, cluster_size, parent_id``."""
        import pandas as pd

        return pd.DataFrame({"X": self.xy[:, 0], "Y": self.xy[:, 1], "element": self.element,
                             "cluster_id": self.cluster_id, "cluster_size": self.cluster_size,
                             "parent_id": self.parent_id})

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write ``X,Y,element,cluster_id,cluster_size,parent_id`` (px, the
        convention of the real labels; :func:`fastsac.io.read_points` reads it)."""
        from ..io import atomic_write_text

        lines = ["X,Y,element,cluster_id,cluster_size,parent_id"]
        for (x, y), e, c, k, q in zip(self.xy, self.element, self.cluster_id, self.cluster_size,
                                      self.parent_id):
            lines.append(f"{x:.4f},{y:.4f},{e},{c},{k},{q}")
        return atomic_write_text(path, "\n".join(lines) + "\n")


def truth_from_field(fld: Field, *, r0: int = 0, c0: int = 0, h: int | None = None,
                     w: int | None = None) -> SimulationTruth:
    """Truth of the atoms whose image position lies in a region (coordinates
    relative to the region)."""
    h = fld.height - r0 if h is None else h
    w = fld.width - c0 if w is None else w
    x, y = fld.xy_image.T if len(fld.xy_image) else (np.zeros(0), np.zeros(0))
    # an atom belongs to the pixel its position rounds to (pixel centres at integers)
    inside = (x >= c0 - 0.5) & (x < c0 + w - 0.5) & (y >= r0 - 0.5) & (y < r0 + h - 0.5)
    a = fld.atoms
    xy = np.column_stack([x[inside] - c0, y[inside] - r0]) if inside.any() else np.zeros((0, 2))
    return SimulationTruth(np.ascontiguousarray(xy, np.float64), a.element[inside],
                           a.unit_id[inside], a.unit_size[inside], a.parent_id[inside],
                           fld.support_area_nm2 * (h * w) / (fld.height * fld.width),
                           fld.p.as_dict())


def simulate(params: SimulationParams | None = None, **kwargs) -> tuple[np.ndarray, SimulationTruth]:
    """Simulate one HAADF-STEM frame of single metal atoms on a carbon support.

    Parameters
    ----------
    params : SimulationParams, optional
        Start from these parameters (default: ``SimulationParams()``).
    **kwargs
        Any :class:`SimulationParams` field, e.g. ``size=512``,
        ``elements=("Pt",)``, ``loading_per_nm2=0.3``,
        ``pattern="clustered"``, ``dimer_fraction=0.2``, ``dose=4e4``,
        ``seed=0``, ``noise=False``, ``dtype="uint16"``.

    Returns
    -------
    image : (size, size) ndarray of ``params.dtype``
        Detector counts.
    truth : SimulationTruth
        Atom positions ([x, y] px), elements, clusters and the parameters.

    Raises
    ------
    ValueError, TypeError
        For invalid parameters (the message names the parameter).

    Examples
    --------
    >>> img, truth = simulate(size=128, seed=1)
    >>> img.shape, img.dtype.name
    ((128, 128), 'uint32')
    >>> truth.xy.shape[1]
    2
    """
    if params is None:
        params = SimulationParams(**kwargs)
    elif kwargs:
        params = dataclasses.replace(params, **kwargs)
    elif not isinstance(params, SimulationParams):
        raise TypeError(f"params must be a SimulationParams, got {type(params).__name__}")
    fld = Field(params)
    img = fld.render(rng=np.random.default_rng([params.seed, 1]))
    return to_dtype(img, params.dtype), truth_from_field(fld)


DEMO_PARAMS = dict(size=512, vacuum="edge", vacuum_fraction=0.25, loading_per_nm2=0.3,
                   pattern="clustered", dimer_fraction=0.25, trimer_fraction=0.15,
                   sites_per_cluster=2.0, cluster_radius_nm=1.5, dose=8e4)


def demo_image(seed: int = 0):
    """The built-in example frame used by ``fastsac demo``.

    A 512² Pt-on-carbon frame (0.0293 nm/px) with a vacuum edge and some
    dimers and trimers, at twice the default dose so atoms are easy to see.

    Returns
    -------
    micrograph : fastsac.io.Micrograph
        Float32 counts with the pixel size set.
    truth : SimulationTruth
    """
    from ..io import Micrograph

    img, truth = simulate(**DEMO_PARAMS, seed=seed)
    m = Micrograph(img.astype(np.float32), truth.params["pixel_size_nm"], "synth", f"synth-demo-{seed}",
                   {"dtype": str(img.dtype), "format": "synth", "params": truth.params})
    return m, truth
