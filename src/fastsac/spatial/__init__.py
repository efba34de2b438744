"""Spatial analysis of detected atoms: neighbours, clusters and statistics."""

from .neighbors import ClusterResult, NeighborResult, clusters, nearest_neighbors
from .stats import (ClarkEvans, ClusterStats, DispersionStats, PatternTest, PooledStats, SampleComparison,
                    Window, clark_evans, cluster_stats, compare_samples, dispersion, pair_correlation_test,
                    pool_dispersion)
from .ripley import PairCorrelation, pair_correlation

__all__ = ["nearest_neighbors", "clusters", "NeighborResult", "ClusterResult",
           "Window", "clark_evans", "cluster_stats", "dispersion", "pair_correlation_test",
           "pool_dispersion", "compare_samples", "ClarkEvans", "ClusterStats", "DispersionStats",
           "PatternTest", "PooledStats", "SampleComparison", "pair_correlation", "PairCorrelation"]
