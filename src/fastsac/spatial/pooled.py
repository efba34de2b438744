"""Pooling the dispersion statistics of several images, and comparing two samples
(permutation and Kolmogorov–Smirnov tests on NN distances and multimer share).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sstats

from .units import json_float
from .dispersion import DispersionStats

__all__ = ['PooledStats', 'pool_dispersion', 'SampleComparison', 'compare_samples']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PooledStats:
    """Per-image and pooled values of several frames of one sample.

    ``n_atoms`` counts the atoms on the support (density = n_atoms / area);
    ``as_dict()["n_atoms"]`` counts all. ``nn_distance`` is in ``unit`` (nm when every frame is calibrated, else px).
    Pooled Clark–Evans: ``R = Σ nᵢ·meanᵢ / Σ nᵢ·Eᵢ`` and
    ``z = Σ nᵢ(meanᵢ − Eᵢ) / √(Σ nᵢ² SEᵢ²)`` over the frames' headline tests.
    """

    per_image: list
    names: list
    unit: str
    n_atoms: int
    area: float
    nn_distance: np.ndarray
    n_multimer: int
    cluster_counts: dict
    ce_R: float
    ce_z: float
    ce_p_value: float

    @property
    def density(self) -> float:
        return self.n_atoms / self.area if self.area else float("nan")

    @property
    def multimer_fraction(self) -> float:
        return self.n_multimer / self.n_atoms if self.n_atoms else float("nan")

    def as_dict(self) -> dict:
        u = self.unit
        nn = self.nn_distance
        per = [s.as_dict() | {"name": nm} for s, nm in zip(self.per_image, self.names)]
        dens = np.array([p[f"density_per_{u}2"] or np.nan for p in per], float)
        return {
            "n_images": len(self.per_image), "length_unit": u,
            "n_atoms": int(sum(s.n_atoms for s in self.per_image)), "n_atoms_in_support": self.n_atoms,
            f"support_area_{u}2": self.area, f"density_per_{u}2": json_float(self.density),
            f"density_between_image_sd_per_{u}2": json_float(dens.std(ddof=1)) if len(dens) > 1 else None,
            f"nn_mean_{u}": json_float(nn.mean()) if len(nn) else None,
            f"nn_median_{u}": json_float(np.median(nn)) if len(nn) else None,
            "multimer_fraction": json_float(self.multimer_fraction), "n_atoms_multimer": self.n_multimer,
            **self.cluster_counts,
            "clark_evans_R": json_float(self.ce_R), "clark_evans_z": json_float(self.ce_z),
            "clark_evans_p_value": json_float(self.ce_p_value), "per_image": per,
        }


def pool_dispersion(stats: Sequence[DispersionStats], *, names: Sequence[str] | None = None) -> PooledStats:
    """Pool the statistics of several frames of one sample.

    Lengths are pooled in nm when every frame is calibrated, else in px (and
    then all frames must share one pixel size, which is not checked).
    """
    stats = list(stats)
    if not stats:
        raise ValueError("stats is empty; pass at least one DispersionStats")
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(stats))]
    calibrated = all(s.pixel_size_nm for s in stats)
    unit = "nm" if calibrated else "px"
    sc = [s.scale if calibrated else 1.0 for s in stats]
    n = sum(int(s.in_support.sum()) for s in stats)
    area = sum(s.support_area_px2 * c * c for s, c in zip(stats, sc))
    nn = np.concatenate([s.finite_nn_px * c for s, c in zip(stats, sc)]) if stats else np.zeros(0)
    counts: dict = {}
    for s in stats:
        for k, v in s.clusters.counts().items():
            counts[k] = counts.get(k, 0) + v
    num = den = var = 0.0
    for s, c in zip(stats, sc):
        ce = s.clark_evans
        if ce.n_used >= 2 and np.isfinite(ce.se):
            num += ce.n_used * ce.mean_nn * c
            den += ce.n_used * ce.expected_nn * c
            var += (ce.n_used * ce.se * c) ** 2
    R = num / den if den else float("nan")
    z = (num - den) / math.sqrt(var) if var else float("nan")
    p = float(2 * sstats.norm.sf(abs(z))) if np.isfinite(z) else float("nan")
    return PooledStats(stats, names, unit, n, float(area), nn, int(sum(s.multimer.sum() for s in stats)),
                       counts, R, z, p)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class SampleComparison:
    """Two-sample comparison (e.g. before/after reaction), lengths in ``unit``.

    ``ks_*``: Kolmogorov–Smirnov on the pooled NN distances. ``perm_*``:
    permutation tests (atoms exchanged between samples) on the difference of
    the mean NN distance and of the multimer share (B − A), two-sided.
    """

    unit: str
    n_a: int
    n_b: int
    nn_mean_a: float
    nn_mean_b: float
    multimer_fraction_a: float
    multimer_fraction_b: float
    density_a: float
    density_b: float
    ks_statistic: float
    ks_p_value: float
    perm_nn_mean_diff: float
    perm_nn_mean_p_value: float
    perm_multimer_diff: float
    perm_multimer_p_value: float
    n_perm: int

    def as_dict(self) -> dict:
        u = self.unit
        return {"length_unit": u, "n_atoms_a": self.n_a, "n_atoms_b": self.n_b,
                f"nn_mean_a_{u}": json_float(self.nn_mean_a), f"nn_mean_b_{u}": json_float(self.nn_mean_b),
                "multimer_fraction_a": json_float(self.multimer_fraction_a),
                "multimer_fraction_b": json_float(self.multimer_fraction_b),
                f"density_a_per_{u}2": json_float(self.density_a), f"density_b_per_{u}2": json_float(self.density_b),
                "ks_statistic": json_float(self.ks_statistic), "ks_p_value": json_float(self.ks_p_value),
                f"nn_mean_diff_{u}": json_float(self.perm_nn_mean_diff), "nn_mean_p_value": json_float(self.perm_nn_mean_p_value),
                "multimer_fraction_diff": json_float(self.perm_multimer_diff),
                "multimer_p_value": json_float(self.perm_multimer_p_value), "n_perm": self.n_perm}


def compare_samples(a, b, *, n_perm: int = 9999, seed: int = 0) -> SampleComparison:
    """Compare the NN distributions and multimer shares of two samples.

    Parameters
    ----------
    a, b : DispersionStats, PooledStats or sequence of DispersionStats
        The frames of sample A and of sample B (pooled if several).
    n_perm : int
        Permutations.

    Notes
    -----
    NN distances shrink as density grows (mean ∝ 1/√λ), so a shift in the NN
    distribution can be a density change as well as a change in clustering;
    read it together with the densities and the Clark–Evans R of each sample.
    Atoms are treated as exchangeable, ignoring frame-to-frame variation.
    """
    pa, pb = (x if isinstance(x, PooledStats) else pool_dispersion(
        [x] if isinstance(x, DispersionStats) else list(x)) for x in (a, b))
    if pa.unit != pb.unit:
        raise ValueError(f"samples are in different units ({pa.unit} vs {pb.unit}); "
                         "give both a pixel size so that lengths are in nm")
    xa, xb = pa.nn_distance, pb.nn_distance
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError(f"need ≥ 2 NN distances per sample, got {len(xa)} and {len(xb)}")
    cut_a = np.concatenate([np.full(len(s.finite_nn_px), s.multimer_cutoff_px * (s.scale if pa.unit == "nm"
                                                                                  else 1.0))
                            for s in pa.per_image])
    cut_b = np.concatenate([np.full(len(s.finite_nn_px), s.multimer_cutoff_px * (s.scale if pb.unit == "nm"
                                                                                  else 1.0))
                            for s in pb.per_image])
    ma, mb = xa < cut_a, xb < cut_b
    ks = sstats.ks_2samp(xa, xb)
    rng = np.random.default_rng(seed)
    allx = np.concatenate([xa, xb])
    allm = np.concatenate([ma, mb]).astype(np.float64)
    na = len(xa)
    d_nn = xb.mean() - xa.mean()
    d_m = mb.mean() - ma.mean()
    cnt_nn = cnt_m = 0
    tot_x, tot_m, n_all = allx.sum(), allm.sum(), len(allx)
    for start in range(0, n_perm, 1000):
        k = min(1000, n_perm - start)
        perm = rng.permuted(np.tile(np.arange(n_all), (k, 1)), axis=1)[:, :na]
        sx = allx[perm].sum(1)
        sm = allm[perm].sum(1)
        dn = (tot_x - sx) / (n_all - na) - sx / na
        dm = (tot_m - sm) / (n_all - na) - sm / na
        cnt_nn += np.count_nonzero(np.abs(dn) >= abs(d_nn) - 1e-12)
        cnt_m += np.count_nonzero(np.abs(dm) >= abs(d_m) - 1e-12)
    return SampleComparison(pa.unit, len(xa), len(xb), float(xa.mean()), float(xb.mean()),
                            float(ma.mean()), float(mb.mean()), pa.density, pb.density,
                            float(ks.statistic), float(ks.pvalue), float(d_nn),
                            (1 + cnt_nn) / (n_perm + 1), float(d_m), (1 + cnt_m) / (n_perm + 1), n_perm)
