"""Dispersion statistics of detected atoms: density, nearest neighbours,
multimers, clusters, Clark–Evans, Ripley's K/L and the pair correlation g(r)
with Monte Carlo envelopes, pooling over frames and two-sample comparison.

All computations run in **pixels**; results carry ``pixel_size_nm`` and their
``as_dict()`` gives every length both in px (``*_px``, ``*_px2``) and in nm
(``*_nm``, ``*_nm2``; None when the image is uncalibrated). The keys are
documented in ``docs/statistics.md``.

Geometry: pixel centres sit at integer coordinates, so an (H, W) image covers
``[-0.5, W-0.5] × [-0.5, H-0.5]``. A :class:`Window` is that rectangle or the
union of the True pixels of a support mask.

This module gathers the statistics for one import; each lives in its own module:
:mod:`.window`, :mod:`.clark_evans`, :mod:`.dispersion`, :mod:`.pair_correlation`
(the whole-window reference test), :mod:`.ripley` (the bounded test the pipeline
uses) and :mod:`.pooled`.
"""

from .clark_evans import ClarkEvans, clark_evans
from .dispersion import ClusterStats, DispersionStats, cluster_extents, cluster_stats, dispersion
from .pair_correlation import PatternTest, pair_correlation_test
from .pooled import PooledStats, SampleComparison, compare_samples, pool_dispersion
from .units import CLUSTER_CLASSES, DEFAULT_MULTIMER_CUTOFF_NM, MONTE_CARLO_MAX_POINTS
from .window import Window

__all__ = [
    "Window", "ClarkEvans", "ClusterStats", "DispersionStats", "PatternTest", "PooledStats",
    "SampleComparison", "clark_evans", "cluster_stats", "cluster_extents", "dispersion",
    "pair_correlation_test", "pool_dispersion", "compare_samples", "DEFAULT_MULTIMER_CUTOFF_NM",
    "CLUSTER_CLASSES", "MONTE_CARLO_MAX_POINTS",
]
