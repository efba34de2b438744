"""The classical (model-free) detector, fastsac's default: a difference-of-Gaussians
matched filter normalised by the local noise, then the shared tail
(:func:`~fastsac.detectors.base.postprocess_scores`).
"""

from __future__ import annotations

import time

import numpy as np

from .. import peaks, preprocess
from .._backend import resolve_device
from .._validate import as_float, check_image, check_positive
from ..io import DEFAULT_PIXEL_SIZE_NM
from .base import Detections, Detector, as_micrograph, postprocess_scores

__all__ = ["ClassicalDetector"]


class ClassicalDetector(Detector):
    """Model-free detector: a centre-surround (difference-of-Gaussians) matched
    filter normalised by the local noise of the filtered image, then maxima,
    NMS and a Gaussian fit.

    Why this works: each atom is a compact bump of known width. The DoG is a
    band-pass matched to that width: its centre integrates the spot, its
    surround (``surround_ratio`` × wider) removes the slowly varying support
    and thickness signal. Shot noise on these images is signal dependent
    (variance ∝ mean^1.4–2.1) and the carbon texture varies across the frame,
    so the filtered map is divided by its *local* standard deviation, which
    turns it into a signal-to-noise map where one threshold works across thin
    and thick regions. Tuned on ptnc-train by leave-one-image-out
    (``benchmarks/tune_classical.py``).

    Parameters are physical when the pixel size is known and scale with it;
    otherwise the pixel equivalents at :data:`DEFAULT_PIXEL_SIZE_NM` are used.

    Parameters
    ----------
    threshold : float
        Minimum score (local-noise units) of an atom.
    atom_sigma_nm : float
        Centre width of the DoG, nm: the detection filter (tuned for F1 on
        ptnc-train; narrower than an atom's image).
    fit_sigma_nm : float
        Physical Gaussian σ of one atom's image, nm (default
        :data:`fastsac.peaks.FIT_SIGMA_NM`, 0.1 nm): the nominal σ of the
        per-atom fit, its window (⌈2.5σ⌉) and centre-of-mass disc. Separate
        from the DoG width: a window matched to the DoG's 0.0586 nm cuts the
        atom's tails off (docs/fit.md).
    surround_ratio : float
        Surround sigma / centre sigma.
    background_nm : float or None
        Median background window removed first, nm (the published 40 px at
        0.0293 nm/px); None skips it (the DoG surround already removes most).
    min_distance_nm : float
        NMS radius, nm: two maxima closer than this are one atom.
    noise_sigma_nm : float
        Width of the local noise estimate, nm.
    exclude_border_px : int
        Ignore maxima this close to the frame edge: the outermost scan line
        often has a different gain, which the reflected filters turn into
        false atoms.
    resolve_pairs : bool
        Decide one atom or two for detections closer than
        ``pair_max_separation_nm`` (:mod:`fastsac.close_pairs`); merged pairs keep
        the stronger detection at the one-atom fit's centre; an elongated single
        spot that holds two atoms becomes two (the split move).
    pair_max_separation_nm, pair_atom_sigma_nm : float
        Pairs examined, and the Gaussian sigma of one atom's image, nm.
    refine : {"gaussian", "com", "none"}
    noise_window : {"box", "gaussian"}
        Weighting of the local noise estimate: ``"box"`` (default) a cascade of
        three extended boxes with the Gaussian's variance (O(1) per pixel,
        support 3σ: :func:`fastsac.boxfilter.box_gaussian_filter`; same F1 on
        ptnc-train and on simulated truth, docs/performance.md); ``"gaussian"``
        the σ-Gaussian truncated at 4σ (before 2026-12).
    device : {"cpu", "auto", "cuda"}
        Where :meth:`detect` computes: ``"cpu"`` runs the C++/numpy kernels;
        ``"cuda"`` runs the score map as torch convolutions and the peak
        kernels in numba CUDA through the tiled engine (:meth:`detect_tiled`),
        so only the peak table leaves the GPU; ``"auto"`` picks CUDA when torch
        sees a GPU. Needs ``background_nm=None`` (the default).
    """

    name = "classical"

    def __init__(self, *, threshold: float = 3.9, atom_sigma_nm: float = 0.0586,
                 fit_sigma_nm: float = peaks.FIT_SIGMA_NM, surround_ratio: float = 3.0, background_nm: float | None = None,
                 min_distance_nm: float = 0.176, noise_sigma_nm: float = 0.94,
                 exclude_border_px: int = 1, refine: str = "gaussian", backend: str = "auto",
                 device: str = "cpu", resolve_pairs: bool = True,
                 pair_max_separation_nm: float = 0.30, pair_atom_sigma_nm: float = 0.095,
                 noise_window: str = "box"):
        self.threshold = float(threshold)
        self.atom_sigma_nm = check_positive(atom_sigma_nm, name="atom_sigma_nm")
        self.fit_sigma_nm = check_positive(fit_sigma_nm, name="fit_sigma_nm")
        self.surround_ratio = check_positive(surround_ratio, name="surround_ratio")
        self.background_nm = (None if background_nm is None
                              else check_positive(background_nm, name="background_nm"))
        self.min_distance_nm = check_positive(min_distance_nm, name="min_distance_nm")
        self.noise_sigma_nm = check_positive(noise_sigma_nm, name="noise_sigma_nm")
        self.exclude_border_px = int(exclude_border_px)
        if self.exclude_border_px < 0:
            raise ValueError(f"exclude_border_px must be ≥ 0, got {exclude_border_px}")
        if refine not in ("gaussian", "com", "none"):
            raise ValueError(f"refine must be 'gaussian', 'com' or 'none', got {refine!r}")
        self.refine = refine
        if noise_window not in ("box", "gaussian"):
            raise ValueError(f"noise_window must be 'box' or 'gaussian', got {noise_window!r}")
        self.noise_window = noise_window
        self.backend = backend
        if device not in ("cpu", "auto", "cuda"):
            raise ValueError(f"device must be 'cpu', 'auto' or 'cuda', got {device!r}")
        self.device = device
        self.resolve_pairs = bool(resolve_pairs)
        self.pair_max_separation_nm = check_positive(pair_max_separation_nm,
                                                     name="pair_max_separation_nm")
        self.pair_atom_sigma_nm = check_positive(pair_atom_sigma_nm, name="pair_atom_sigma_nm")
        self._nets: dict = {}

    def params(self) -> dict:
        return {"threshold": self.threshold, "atom_sigma_nm": self.atom_sigma_nm,
                "fit_sigma_nm": self.fit_sigma_nm, "surround_ratio": self.surround_ratio, "background_nm": self.background_nm,
                "min_distance_nm": self.min_distance_nm, "noise_sigma_nm": self.noise_sigma_nm,
                "exclude_border_px": self.exclude_border_px, "refine": self.refine,
                "noise_window": self.noise_window,
                "resolve_pairs": self.resolve_pairs,
                "pair_max_separation_nm": self.pair_max_separation_nm,
                "pair_atom_sigma_nm": self.pair_atom_sigma_nm}

    def pair_params(self, pixel_size_nm: float | None) -> dict | None:
        """Keyword arguments of :func:`fastsac.close_pairs.resolve_pairs` at this pixel
        size, or None when the close-pair stage is off."""
        if not self.resolve_pairs:
            return None
        from ..close_pairs import PAIR_DEFAULTS

        return {"max_separation_px": self._px(self.pair_max_separation_nm, pixel_size_nm),
                "atom_sigma_px": self._px(self.pair_atom_sigma_nm, pixel_size_nm),
                "slope": PAIR_DEFAULTS["slope"], "prior_log_odds": PAIR_DEFAULTS["prior_log_odds"],
                "bond_px": self._px(PAIR_DEFAULTS["bond_nm"], pixel_size_nm),
                "split_min_elongation_px": (
                    None if PAIR_DEFAULTS["split_min_elongation_nm"] is None
                    else self._px(PAIR_DEFAULTS["split_min_elongation_nm"], pixel_size_nm)),
                "split_min_elongation_z": PAIR_DEFAULTS["split_min_elongation_z"],
                "split_prior_log_odds": PAIR_DEFAULTS["split_prior_log_odds"]}

    def _px(self, nm: float, pixel_size_nm: float | None) -> float:
        # Calibrations that differ in the 12th digit (TIFF 0.029299999999512 vs
        # Zarr 0.0293) must give the same pixel parameters: round the pixel size.
        return nm / peaks.stable_float(pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)

    def pixel_params(self, pixel_size_nm: float | None) -> dict:
        """The filter widths, atom size and NMS distance in pixels at
        ``pixel_size_nm`` (what :meth:`dog`, :meth:`snr` and the detector tail
        use; the montage engine derives its halos and refinement from them).

        ``sigma_px`` is the atom's σ for the refinement (``fit_sigma_nm``: the
        centre-of-mass disc, the fit's σ and window), ``dog_sigma_px`` and
        ``surround_px`` the DoG's centre and surround widths."""
        s = self._px(self.atom_sigma_nm, pixel_size_nm)
        bg = (None if self.background_nm is None
              else max(3, int(round(self._px(self.background_nm, pixel_size_nm)))))
        return {"sigma_px": self._px(self.fit_sigma_nm, pixel_size_nm), "dog_sigma_px": s,
                "surround_px": s * self.surround_ratio, "background_px": bg,
                "noise_sigma_px": self._px(self.noise_sigma_nm, pixel_size_nm),
                "min_distance_px": self._px(self.min_distance_nm, pixel_size_nm)}

    def dog(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Stage 1 of the score map: optional median background, then the
        centre-surround difference of Gaussians, float32 (H, W)."""
        p = self.pixel_params(pixel_size_nm)
        img = np.asarray(as_float(check_image(image)), dtype=np.float32)  # no copy: never written to
        if p["background_px"] is not None:
            img = preprocess.subtract_background(img, method="median", size_px=p["background_px"],
                                                 backend=self.backend).image
        d = preprocess.gaussian_filter(img, p["dog_sigma_px"], backend=self.backend)
        d -= preprocess.gaussian_filter(img, p["surround_px"], backend=self.backend)
        return d

    def snr(self, dog: np.ndarray, *, pixel_size_nm=None, cap: float | None = None,
            global_rms: float | None = None) -> np.ndarray:
        """Stage 2: the DoG in units of its local noise. ``cap``/``global_rms``
        default to this image's own (see :func:`fastsac.preprocess.local_noise`)."""
        noise = preprocess.local_noise(dog, sigma_px=self.pixel_params(pixel_size_nm)["noise_sigma_px"],
                                       cap=cap, global_rms=global_rms, window=self.noise_window,
                                       backend=self.backend)
        # Divide into the noise map (a fresh float32 array): one frame less at the peak.
        out = noise if noise.dtype == np.float32 and noise.shape == dog.shape else None
        return np.divide(dog, noise, out=out).astype(np.float32, copy=False)

    def score_map(self, image, *, pixel_size_nm=None) -> np.ndarray:
        """Local signal-to-noise of the DoG-filtered image, float32 (H, W)."""
        return self.snr(self.dog(image, pixel_size_nm=pixel_size_nm), pixel_size_nm=pixel_size_nm)

    def resolved_device(self) -> str:
        if self.device == "cpu":
            return "cpu"

        return resolve_device(self.device).type

    def _tail_params(self, px) -> dict:
        sigma_px = self._px(self.fit_sigma_nm, px)
        return {"threshold": self.threshold, "min_distance_px": self._px(self.min_distance_nm, px),
                "refine": self.refine, "sigma_px": sigma_px,
                "fit_radius_px": peaks.fit_radius(sigma_px),
                "exclude_border_px": self.exclude_border_px, "pairs": self.pair_params(px)}

    def as_predictor(self, pixel_size_nm: float | None = None):
        """The score map as a torch module (:class:`fastsac.models.classical.ClassicalScoreNet`)
        for :func:`fastsac.infer.detect_tiled`; calibrate it on the image first
        (:func:`fastsac.models.classical.calibrate`). Cached per pixel size."""
        from ..models.classical import ClassicalScoreNet

        key = float(pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)
        if key not in self._nets:
            self._nets[key] = ClassicalScoreNet.from_detector(self, pixel_size_nm).eval()
        return self._nets[key]

    def detect_tiled(self, source, *, pixel_size_nm: float | None = None, device: str | None = None,
                     tile=None, batch_size: int | None = None, progress: bool = False,
                     exact_max_px: int = 1 << 26, resident: bool | None = None):
        """Detect on an image of any size through the tiled torch engine
        (GPU when ``device`` resolves to CUDA): calibrate the global noise
        statistics (:func:`fastsac.models.classical.calibrate`: exact for images
        up to ``exact_max_px`` in memory, one streamed histogram pass beyond),
        then :func:`fastsac.infer.detect_tiled`. Returns
        :class:`fastsac.infer.TiledDetections` in image coordinates.

        ``resident`` (default: when ``source`` is an in-memory array on a CUDA
        device with room for 8 B/px) uploads the image once and keeps it and
        its DoG on the device (:func:`fastsac.models.classical.detect_resident`):
        one read of the host data instead of two, and an exact percentile."""
        from .. import infer
        from ..models.classical import calibrate, detect_resident, resident_bytes

        dev = device or (self.device if self.device != "cpu" else "cpu")
        if tile is None and resolve_device(dev).type == "cuda":
            # The halo is 121 px at 0.0293 nm/px: 4096² cores read 1.12× their
            # area (the memory-based default picks ~1.7k cores, 1.4×).
            tile = 4096
        net = self.as_predictor(pixel_size_nm)
        tail = self._tail_params(pixel_size_nm)
        if resident is None:
            resident = False
            if isinstance(source, np.ndarray) and source.ndim == 2 and \
                    resolve_device(dev).type == "cuda":
                import torch

                free = torch.cuda.mem_get_info()[0]
                resident = free > 1.5 * resident_bytes(source.shape) + (4 << 30)
        if resident:
            return detect_resident(np.asarray(source), net, device=dev, tile=tile or 4096,
                                   progress=progress, **tail)
        t0 = time.perf_counter()
        stats = calibrate(source, net, device=dev, exact_max_px=exact_max_px, tile=tile,
                          batch_size=batch_size, progress=progress)
        t1 = time.perf_counter()
        reach = peaks.refine_reach(tail["sigma_px"], tail["fit_radius_px"], tail["refine"])
        res = infer.detect_tiled(source, net, halo=max(net.receptive_field + 1, reach), tile=tile,
                                 device=dev, batch_size=batch_size, progress=progress, **tail)
        res.timings["calibrate"] = t1 - t0
        res.params["calibration"] = stats
        return res

    def detect(self, micrograph, *, pixel_size_nm=None) -> Detections:
        img, px = as_micrograph(micrograph, pixel_size_nm)
        params = self.params() | {"pixel_size_nm_used": px or DEFAULT_PIXEL_SIZE_NM}
        if self.device != "cpu" and self.resolved_device() == "cuda":
            # One window holding the whole frame (tiles only when it is huge).
            res = self.detect_tiled(img, pixel_size_nm=px, device="cuda",
                                    tile=None if img.size > (1 << 26) else max(img.shape))
            t = res.timings
            timings = {"score_map": t.get("calibrate", 0.0) + t.get("dog", 0.0) + t["inference"]
                       + t["read"],
                       "peaks": t["peaks"] + t["nms"], "refine": 0.0}
            return Detections(**res.as_dict(), detector=self.name,
                              params=params | {"device": res.device}, timings=timings)
        t0 = time.perf_counter()
        score = self.score_map(img, pixel_size_nm=px)
        t1 = time.perf_counter()
        out = postprocess_scores(score, img, backend=self.backend, **self._tail_params(px))
        timings = {"score_map": t1 - t0, **out.pop("timings")}
        return Detections(**out, detector=self.name, params=params, timings=timings)
