"""Spatial analysis of detected atoms: neighbours, clusters and statistics."""

from .neighbors import ClusterResult, NeighborResult, clusters, nearest_neighbors

__all__ = ["nearest_neighbors", "clusters", "NeighborResult", "ClusterResult"]
