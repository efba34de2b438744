"""Simulated human annotators: who clicks which spot on a frame with known truth.

A human labeller sees *evidence*, not truth. We model an annotator as clicking each visible
spot (a local maximum of the classical SNR map: a real atom or a noise peak of the support)
independently with a probability that rises with the spot's SNR,

    P(click | SNR) = (1 − lapse) · E(4.25 + (SNR − 4.25 − snr_shift) / scale),

where E is the expert's labelled fraction by SNR measured on the ptnc-train labels
(``benchmarks/label_rate_by_snr.py`` → ``docs/label_rate_by_snr.json``; of the stage-1
candidates with SNR 2.5–3 the expert clicked 1.5 %, 3–3.5 10 %, 3.5–4 30 %, 4–4.5 56 %,
4.5–5 63 %, 5–6 ~90 %, above 6 all; linear between bin centres), ``snr_shift`` moves the
annotator's threshold (positive = conservative) and ``scale`` > 1 makes the decision less
consistent. Clicks land ``jitter_px`` (per axis) off the true centre, plus a few slips
(clicks at random places, Poisson with mean ``slips_per_image``). A logistic fit of the
same data (snr50 = 4.25, width = 0.43) puts twice the measured rate into the crowded
2.5–3 bin (0.03 vs 0.015 over 1101 candidates), so the measured bins are used. Because every annotator reacts to the same evidence,
their misses are correlated through SNR exactly as in real data: faint atoms are missed by
most annotators, which is what limits any consensus.

The module works on arrays (spot positions, SNRs, which truth atom each spot is); the
caller computes the SNR of the spots with the detector of its choice (the study uses
:func:`fastsac.detectors.rescore.candidate_features`, the same stage-1 candidates the curve was
measured on), so that ``synth`` keeps importing nothing from the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .._validate import as_points

__all__ = ["AnnotatorProfile", "SimulatedAnnotation", "EXPERT", "PROFILES", "click_probability",
           "simulate_annotator", "random_panel"]

#: P(expert labelled | classical SNR) on ptnc-train (docs/label_rate_by_snr.json): bin centres
#: of the SNR bins 2.5–3, 3–3.5, …, 5.5–6, 6–7, 7–8, > 8 (plotted at 9) and the labelled fraction.
EXPERT_CURVE_SNR = np.array([2.75, 3.25, 3.75, 4.25, 4.75, 5.25, 5.75, 6.5, 7.5, 9.0])
EXPERT_CURVE_RATE = np.array([0.015, 0.098, 0.297, 0.558, 0.632, 0.879, 0.923, 1.0, 1.0, 1.0])
#: SNR at which the expert clicks half of the spots (logistic fit of the same data).
EXPERT_SNR50 = 4.253


@dataclass(frozen=True)
class AnnotatorProfile:
    """How one simulated annotator behaves.

    Attributes
    ----------
    name : str
    snr_shift : float
        Shift of the expert curve along SNR (positive = conservative: clicks only brighter spots).
    scale : float
        Stretch of the expert curve around its midpoint (> 1: less consistent decisions).
    lapse : float
        Chance of missing even an obvious atom (attention).
    jitter_px : float
        Standard deviation of the click position per axis (px); radial RMS is √2 times this.
    slips_per_image : float
        Mean number of clicks at random places per image (Poisson).
    """

    name: str = "expert"
    snr_shift: float = 0.0
    scale: float = 1.0
    lapse: float = 0.0
    jitter_px: float = 1.4
    slips_per_image: float = 0.5

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"AnnotatorProfile.scale must be > 0, got {self.scale}")
        for key in ("jitter_px", "slips_per_image"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"AnnotatorProfile.{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.lapse < 1:
            raise ValueError(f"AnnotatorProfile.lapse must lie in [0, 1), got {self.lapse}")


#: The measured expert.
EXPERT = AnnotatorProfile()

#: Named annotator types: the expert, a conservative one, a liberal one and a novice.
PROFILES = {
    "expert": EXPERT,
    "careful": AnnotatorProfile("careful", snr_shift=0.4, scale=0.8, lapse=0.01, jitter_px=1.2,
                                slips_per_image=0.2),
    "liberal": AnnotatorProfile("liberal", snr_shift=-0.4, scale=1.0, lapse=0.01, jitter_px=1.4,
                                slips_per_image=1.0),
    "novice": AnnotatorProfile("novice", snr_shift=0.2, scale=1.5, lapse=0.08, jitter_px=2.0,
                               slips_per_image=2.0),
}


def click_probability(snr, profile: AnnotatorProfile = EXPERT) -> np.ndarray:
    """P(the annotator clicks a spot of this SNR), (N,) float64.

    Examples
    --------
    >>> click_probability([2.75, 4.25, 8.0]).round(3).tolist()
    [0.015, 0.558, 1.0]
    >>> click_probability([4.25], PROFILES["careful"]).round(3).tolist()
    [0.249]
    """
    s = np.asarray(snr, dtype=np.float64)
    eff = EXPERT_SNR50 + (s - EXPERT_SNR50 - profile.snr_shift) / profile.scale
    return (1 - profile.lapse) * np.interp(eff, EXPERT_CURVE_SNR, EXPERT_CURVE_RATE)


@dataclass(frozen=True)
class SimulatedAnnotation:
    """The clicks of one simulated annotator on one image.

    Attributes
    ----------
    xy : (K, 2) float64
        Click positions [x, y] (px).
    truth_index : (K,) int64
        Truth atom clicked, or -1 for a false click (noise peak or slip).
    kind : (K,) int8
        0 = a real atom, 1 = a noise peak, 2 = a slip at a random place.
    profile : AnnotatorProfile
    """

    xy: np.ndarray
    truth_index: np.ndarray
    kind: np.ndarray
    profile: AnnotatorProfile = field(default=EXPERT)

    def __len__(self) -> int:
        return len(self.xy)


def simulate_annotator(spot_xy, spot_snr, spot_truth, *, truth_xy, shape, profile: AnnotatorProfile = EXPERT,
                       rng: np.random.Generator | int | None = None) -> SimulatedAnnotation:
    """Clicks of one annotator on one image.

    Parameters
    ----------
    spot_xy : (S, 2) array
        Visible spots [x, y] (px): stage-1 candidates of the SNR map.
    spot_snr : (S,) array
        Their SNR.
    spot_truth : (S,) int array
        Truth atom each spot belongs to, -1 for a noise peak.
    truth_xy : (N, 2) array
        Truth positions; a click on a real atom is jittered around the *truth* position.
    shape : (H, W)
        Image shape, for slips and to keep clicks inside the image.
    profile : AnnotatorProfile
    rng : Generator or int, optional

    Returns
    -------
    SimulatedAnnotation
    """
    rng = np.random.default_rng(rng)
    sxy = as_points(spot_xy, name="spot_xy")
    snr = np.asarray(spot_snr, dtype=np.float64).reshape(-1)
    idx = np.asarray(spot_truth, dtype=np.int64).reshape(-1)
    txy = as_points(truth_xy, name="truth_xy")
    if not (len(snr) == len(idx) == len(sxy)):
        raise ValueError(f"spot_xy, spot_snr and spot_truth need one entry per spot, got "
                         f"{len(sxy)}, {len(snr)}, {len(idx)}")
    if np.any(idx >= len(txy)):
        raise ValueError("spot_truth refers to a truth atom that truth_xy does not have")
    h, w = int(shape[0]), int(shape[1])
    clicked = rng.random(len(snr)) < click_probability(snr, profile)
    centre = np.where((idx >= 0)[:, None], txy[np.maximum(idx, 0)] if len(txy) else sxy, sxy)
    xy = centre[clicked] + rng.normal(0.0, profile.jitter_px, (int(clicked.sum()), 2))
    n_slip = rng.poisson(profile.slips_per_image)
    slips = rng.uniform([0, 0], [w - 1, h - 1], (n_slip, 2))
    xy = np.clip(np.concatenate([xy, slips]), [0, 0], [w - 1, h - 1])
    truth_index = np.concatenate([idx[clicked], np.full(n_slip, -1, np.int64)])
    kind = np.concatenate([np.where(idx[clicked] >= 0, 0, 1), np.full(n_slip, 2)]).astype(np.int8)
    return SimulatedAnnotation(xy.reshape(-1, 2), truth_index, kind, profile)


def random_panel(n: int, *, rng: np.random.Generator | int | None = None,
                 spread: float = 1.0) -> list[AnnotatorProfile]:
    """``n`` annotators of different skill, drawn around the measured expert.

    The threshold shift is normal with sd 0.3 SNR (× ``spread``), the stretch uniform in
    0.8–1.3, lapses 0–5 %, slips 0.2–2 per image, jitter 1.1–1.7 px per axis (radial RMS
    1.6–2.4 px); ``spread`` scales every range.
    """
    rng = np.random.default_rng(rng)
    out = []
    for i in range(int(n)):
        out.append(replace(
            EXPERT, name=f"sim{i}",
            snr_shift=float(spread * 0.3 * rng.standard_normal()),
            scale=float(1 + spread * rng.uniform(-0.2, 0.3)),
            lapse=float(spread * rng.uniform(0.0, 0.05)),
            slips_per_image=float(0.2 + spread * rng.uniform(0, 1.8)),
            jitter_px=float(1.1 + spread * rng.uniform(0, 0.6))))
    return out
