"""The whole analysis of one micrograph: detect → support mask → neighbours →
clusters → dispersion and pair-correlation statistics, computed once into an
:class:`~fastsac.result.AnalysisResult`.

``analyze`` is what ``fastsac analyze`` runs per image; every output is a writer
over its result (:func:`fastsac.result.write_result`, re-exported here).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .confidence import atom_probability, confidence_summary
from .detectors import get_detector
from .io import DEFAULT_PIXEL_SIZE_NM, Micrograph
from .result import (ATOM_COLUMNS, SUMMARY_COLUMNS, AnalysisResult, build_summary, summary_row,
                     write_result, write_summary_csv)
from .spatial import clusters, nearest_neighbors
from .spatial.ripley import pair_correlation as pair_correlation_test
from .spatial.clusters_table import cluster_table
from .spatial.stats import dispersion
from .species import species_of_atoms
from .support import require_support
from .support import support_mask as find_support

__all__ = ["analyze", "AnalysisResult", "write_result", "ATOM_COLUMNS", "SUMMARY_COLUMNS",
           "summary_row", "write_summary_csv"]

def analyze(micrograph: Micrograph | np.ndarray, *, detector="default",
            multimer_cutoff_nm: float = 0.23, pixel_size_nm: float | None = None,
            support_mask: bool = True, backend: str = "auto",
            detector_params: dict | None = None, mask_params: dict | None = None,
            stats_params: dict | None = None, pair_correlation: bool = True,
            pair_correlation_params: dict | None = None, elements=None, species: bool = True,
            estimate_pixel_size: bool = True) -> AnalysisResult:
    """Detect atoms and compute their organisation on one image.

    Parameters
    ----------
    micrograph : Micrograph or (H, W) array
    detector : "default", "classical", a checkpoint path or a Detector
    multimer_cutoff_nm : float
        An atom whose nearest neighbour is closer than this belongs to a
        multimer; clusters join atoms closer than it (single linkage). The
        published workflow uses 0.22–0.23 nm. Without calibration it is
        converted with :data:`~fastsac.io.DEFAULT_PIXEL_SIZE_NM`.
    pixel_size_nm : float, optional
        Overrides the micrograph's calibration.
    support_mask : bool
        Find vacuum (dark and flat) and report densities and Clark–Evans per
        area of support (:func:`fastsac.support.support_mask`).
    mask_params : dict, optional
        Keyword arguments for :func:`~fastsac.support.support_mask`
        (e.g. ``working_px``). When the detector runs on a GPU the mask is
        computed at the same time (on the GPU too, unless ``mask_params`` says
        ``device="cpu"``).
    stats_params : dict, optional
        Keyword arguments for :func:`~fastsac.spatial.stats.dispersion` (e.g.
        ``mask_correction="donnelly"`` instead of Monte Carlo, for live frames).
    pair_correlation : bool
        Ripley's L and g(r) with CSR envelopes and the global test
        (:func:`~fastsac.spatial.ripley.pair_correlation`, arguments in
        ``pair_correlation_params``; bounded in N: above 10 000 atoms the
        test uses the reference points of a sub-window), stored in
        ``summary["pair_correlation"]`` with its curves; live frames skip it.
    elements : sequence of str, optional
        Elements present (e.g. ``["Pt", "Pd"]``): species per atom by the
        Z-contrast mixture (:func:`fastsac.species.species_of_atoms`; atoms
        table columns ``species``, ``species_probability``; summary
        ``species``). None: intensity classes whose number comes from the data.
    species : bool
        Classify species at all (live frames skip it without ``elements``: it costs
        more than detection there; summary ``species`` is then None).
    estimate_pixel_size : bool
        Without a calibration, estimate the pixel size from the apparent atom
        size (:func:`fastsac.scale.estimate_atom_scale`; summary
        ``pixel_size_source: "estimated from atom size"``, ``pixel_size_estimate``).

    Returns
    -------
    AnalysisResult
        ``summary`` holds the keys documented in docs/statistics.md
        (:meth:`fastsac.spatial.stats.DispersionStats.as_dict`) plus image,
        calibration, detector and timing information.
    """
    if not isinstance(micrograph, Micrograph):
        micrograph = Micrograph.from_array(micrograph, pixel_size_nm=pixel_size_nm)
    elif pixel_size_nm is not None:
        micrograph = Micrograph(micrograph.data, float(pixel_size_nm), "override",
                                micrograph.source, micrograph.metadata)
    scale_estimate = None
    if micrograph.pixel_size_nm is None and estimate_pixel_size:
        from .scale import estimate_atom_scale_sampled

        data = micrograph.data
        scale_estimate = estimate_atom_scale_sampled(lambda y0, y1, x0, x1: data[y0:y1, x0:x1],
                                                     data.shape)
        if np.isfinite(scale_estimate.pixel_size_nm) and not scale_estimate.at_edge:
            micrograph = Micrograph(micrograph.data, float(scale_estimate.pixel_size_nm),
                                    "estimated from atom size", micrograph.source, micrograph.metadata)
    det = get_detector(detector, **(detector_params or {}))
    px = micrograph.pixel_size_nm
    mask_job = None
    on_gpu = (det.resolved_device() if hasattr(det, "resolved_device")
              else getattr(det, "device", "cpu")) != "cpu"
    if support_mask and on_gpu:
        # GPU detection leaves the CPU idle: find the support meanwhile.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsac-mask")
        mask_job = pool.submit(find_support, micrograph.data, pixel_size_nm=px,
                               **({"device": det.device} | (mask_params or {})))
        pool.shutdown(wait=False)
    t0 = time.perf_counter()
    found = det.detect(micrograph)
    t1 = time.perf_counter()
    cutoff_px = multimer_cutoff_nm / (px or DEFAULT_PIXEL_SIZE_NM)
    nn = nearest_neighbors(found.xy, backend=backend)
    cl = clusters(found.xy, cutoff=cutoff_px, backend=backend)
    if mask_job is not None:
        mask = mask_job.result()
    else:
        mask = (find_support(micrograph.data, pixel_size_nm=px, **(mask_params or {}))
                if support_mask else None)
    t2 = time.perf_counter()
    if mask is not None:
        require_support(mask, micrograph.source or micrograph.name)
    mask_arr = None if mask is None else mask.mask
    disp = dispersion(found.xy, image_shape=micrograph.shape, pixel_size_nm=px, mask=mask_arr,
                      multimer_cutoff_px=cutoff_px, backend=backend, **(stats_params or {}))
    t3 = time.perf_counter()
    pattern = None
    if pair_correlation and int(disp.in_support.sum()) >= 3:
        pattern = pair_correlation_test(disp.xy[disp.in_support], image_shape=micrograph.shape,
                                        mask=mask_arr, pixel_size_nm=px, **(pair_correlation_params or {}))
    t4 = time.perf_counter()
    conf = confidence_summary(
        atom_probability(found, pixel_size_nm=px), xy=found.xy,
        in_support=disp.in_support, support_area_nm2=disp.as_dict().get("support_area_nm2"),
        multimer_cutoff_px=cutoff_px, split_probability=found.split_probability)
    t5 = time.perf_counter()
    # Species from the fixed-shape photometry: it never fails, and no photometry window or
    # background model tried separated species better on simulated
    # truth (docs/species.md, intensity study).
    species_result = (species_of_atoms(micrograph.data, found.xy, pixel_size_nm=px, elements=elements)
                      if species or elements else None)
    ctable = cluster_table(found.xy, cl.labels, pixel_size_nm=px,
                           species=species_result.species if species_result is not None
                           and species_result.status == "ok" else None)
    t6 = time.perf_counter()
    summary = build_summary(
        disp, name=micrograph.name, source=micrograph.source, shape=micrograph.shape,
        pixel_size_nm=px, pixel_size_source=micrograph.pixel_size_source,
        mask_info=None if mask is None else mask.as_dict(), pattern=pattern,
        detector={"name": found.detector, "params": found.params},
        timings={**found.timings, "detect_total": t1 - t0, "neighbors_mask": t2 - t1,
                 "statistics": t3 - t2, "pair_correlation": t4 - t3, "confidence": t5 - t4,
                 "species_clusters": t6 - t5},
        backends={"nearest_neighbors": nn.backend, "clusters": cl.backend},
        parameters={"multimer_cutoff_nm": multimer_cutoff_nm, "support_mask": support_mask,
                    "pair_correlation": pair_correlation, "stats_params": stats_params or {},
                    "mask_params": mask_params or {}, "elements": list(elements) if elements else None,
                    "estimate_pixel_size": estimate_pixel_size},
        extra={"confidence": conf,
               "pixel_size_estimate": None if scale_estimate is None else scale_estimate.as_dict(),
               "species": None if species_result is None else species_result.as_dict(),
               "cluster_size_distribution": ctable.size_distribution()})
    nn_dist = nn.distance * px if px else nn.distance
    return AnalysisResult(micrograph.name, micrograph, found, nn_dist, nn.index, cl.labels,
                          cl.sizes, summary, mask_arr, disp, pattern,
                          {} if species_result is None else
                          {"species": species_result.species,
                           "species_probability": species_result.probability},
                          cluster_table=ctable, species=species_result)
