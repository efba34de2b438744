"""Parameters of the HAADF-STEM simulator (:class:`SimulationParams`)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import numpy as np

from .._validate import check_positive, resolve_option
from .elements import element

__all__ = ["SimulationParams", "Pattern", "Vacuum", "OutputDtype", "DTYPE_SCALE"]


class Pattern(str, enum.Enum):
    RANDOM = "random"              # complete spatial randomness (+ hard core)
    CLUSTERED = "clustered"        # Thomas / Matérn cluster process
    NANOCLUSTERS = "nanoclusters"  # singles plus small rafts of N atoms


class ClusterProcess(str, enum.Enum):
    THOMAS = "thomas"    # sites Gaussian around parents (σ = cluster_radius_nm)
    MATERN = "matern"    # sites uniform in a disc (radius = cluster_radius_nm)


class Vacuum(str, enum.Enum):
    EDGE = "edge"    # a wavy support edge crossing the field
    HOLES = "holes"  # holes where a smooth random field falls below a level
    NONE = "none"


class OutputDtype(str, enum.Enum):
    UINT16 = "uint16"
    UINT32 = "uint32"
    FLOAT32 = "float32"


# Detector gain/offset/read noise are given for uint32 output (the ptnc-train
# range, ~2e5–2.7e6); uint16 output scales them so that the same frame fits
# in 0–65535 with headroom.
DTYPE_SCALE = {"uint32": 1.0, "float32": 1.0, "uint16": 1.0 / 48.0}


@dataclass(frozen=True)
class SimulationParams:
    """Every knob of :func:`fastsac.synth.simulate`, with defaults tuned so that
    frames look like the ptnc-train images (512², 15 nm field of view,
    0.0293 nm/px, Pt on N-doped carbon, uint32 detector counts); see
    ``docs/synth.md`` for the measured comparison.

    Geometry
        size (px), pixel_size_nm.
    Atoms
        elements (symbols), element_fractions (None: equal),
        loading_per_nm2 (atoms per nm² of *support*), pattern
        ("random" | "clustered" | "nanoclusters"), dimer_fraction and
        trimer_fraction (fractions of *atoms* that sit in dimers/trimers),
        cluster_process ("thomas" | "matern"), cluster_radius_nm,
        sites_per_cluster (mean units per Thomas/Matérn cluster),
        nanocluster_size (min, max atoms), nanocluster_fraction (fraction of
        atoms in nanoclusters), min_separation_nm (hard core between atoms of
        different units), surface_margin_nm (atoms keep this far from vacuum).
    Contrast
        z_exponent (HAADF ∝ Z^z_exponent), cross_section_A2 (integrated HAADF
        cross-section of one Pt atom, Å²; other elements scale by
        (Z/78)^z_exponent), atom_intensity_cv (per-atom lognormal spread),
        probe_fwhm_nm (Gaussian probe + effective blur), atom_blur_cv
        (per-atom spread of the blur: height/defocus).
    Support
        support_thickness_nm (mean), support_haadf_per_nm (fraction of the
        incident electrons scattered onto the HAADF detector per nm of
        carbon), thickness_variation (relative, ~10 nm scale), texture
        (relative, amorphous ~1.2–3 nm blobs), atomic_texture (relative,
        ~0.5 nm: structure at the size of an atom image, what makes atoms
        hard to tell from the support), fine_texture (relative, ~0.15 nm),
        vacuum ("edge" | "holes" | "none"), vacuum_fraction,
        edge_taper_nm (thickness rises over this distance from the edge),
        vacuum_haadf (detected fraction everywhere, also over vacuum: stray
        scattering and contamination; the real "vacuum" is ~12 e/px),
        fringes (bool), fringe_spacing_nm, fringe_amplitude.
    Detector and scan
        dose (incident electrons per Å²), gain (counts per detected electron),
        offset (dark level, counts), read_noise (counts, Gaussian),
        gain_cv (pulse-height spread per electron), line_jitter_px (σ of the
        per-scan-line x shift), line_gain_jitter (relative per-line gain
        flicker), drift_px ((dx, dy) slow drift accumulated over the frame),
        noise (False gives the noiseless expectation), dtype.
    Randomness
        seed (int; every random choice derives from it).
    """

    size: int = 512
    pixel_size_nm: float = 0.0293
    elements: tuple = ("Pt",)
    element_fractions: tuple | None = None
    loading_per_nm2: float = 0.25
    pattern: str = "random"
    dimer_fraction: float = 0.0
    trimer_fraction: float = 0.0
    cluster_process: str = "thomas"
    cluster_radius_nm: float = 1.0
    sites_per_cluster: float = 4.0
    nanocluster_size: tuple = (4, 12)
    nanocluster_fraction: float = 0.5
    min_separation_nm: float = 0.2
    surface_margin_nm: float = 0.15
    z_exponent: float = 1.7
    cross_section_A2: float = 0.046
    atom_intensity_cv: float = 0.08
    probe_fwhm_nm: float = 0.25
    atom_blur_cv: float = 0.05
    support_thickness_nm: float = 25.0
    support_haadf_per_nm: float = 9e-4
    thickness_variation: float = 0.2
    texture: float = 0.08
    atomic_texture: float = 0.04
    fine_texture: float = 0.02
    vacuum: str = "edge"
    vacuum_fraction: float = 0.2
    edge_taper_nm: float = 2.5
    vacuum_haadf: float = 3.5e-3
    fringes: bool = False
    fringe_spacing_nm: float = 0.34
    fringe_amplitude: float = 0.06
    dose: float = 4.0e4
    gain: float | None = None
    offset: float | None = None
    read_noise: float | None = None
    gain_cv: float = 0.7
    line_jitter_px: float = 0.25
    line_gain_jitter: float = 0.01
    drift_px: tuple = (1.0, 0.5)
    noise: bool = True
    dtype: str = "uint32"
    seed: int = 0

    # defaults of the detector for uint32 counts (scaled per dtype)
    _GAIN32 = 6750.0
    _OFFSET32 = 172000.0
    _READ32 = 3000.0

    def __post_init__(self):
        s = object.__setattr__
        size = int(self.size)
        if size < 8:
            raise ValueError(f"size must be ≥ 8 px, got {self.size!r}")
        s(self, "size", size)
        for name in ("pixel_size_nm", "probe_fwhm_nm", "support_haadf_per_nm", "cross_section_A2",
                     "z_exponent", "fringe_spacing_nm", "dose", "cluster_radius_nm",
                     "sites_per_cluster", "edge_taper_nm"):
            s(self, name, check_positive(getattr(self, name), name=name))
        for name in ("loading_per_nm2", "min_separation_nm", "surface_margin_nm", "atom_intensity_cv",
                     "atom_blur_cv", "support_thickness_nm", "thickness_variation", "texture",
                     "fine_texture", "atomic_texture", "fringe_amplitude", "vacuum_haadf",
                     "gain_cv", "line_jitter_px", "line_gain_jitter"):
            s(self, name, check_positive(getattr(self, name), name=name, allow_zero=True))
        els = (self.elements,) if isinstance(self.elements, str) else tuple(self.elements)
        if not els:
            raise ValueError("elements must name at least one element, e.g. ('Pt',)")
        s(self, "elements", tuple(element(e).symbol for e in els))
        if self.element_fractions is not None:
            fr = np.asarray(self.element_fractions, float)
            if fr.shape != (len(els),) or (fr < 0).any() or fr.sum() <= 0:
                raise ValueError(f"element_fractions must be {len(els)} non-negative numbers (one per "
                                 f"element) with a positive sum, got {self.element_fractions!r}")
            s(self, "element_fractions", tuple(float(f) for f in fr / fr.sum()))
        for name in ("dimer_fraction", "trimer_fraction", "vacuum_fraction", "nanocluster_fraction"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {v!r}")
            s(self, name, v)
        if self.dimer_fraction + self.trimer_fraction > 1.0:
            raise ValueError("dimer_fraction + trimer_fraction must be ≤ 1 (they are fractions of "
                             f"atoms), got {self.dimer_fraction} + {self.trimer_fraction}")
        if self.vacuum_fraction >= 0.95:
            raise ValueError(f"vacuum_fraction must be < 0.95, got {self.vacuum_fraction}")
        lo, hi = (int(v) for v in self.nanocluster_size)
        if not 4 <= lo <= hi <= 200:
            raise ValueError(f"nanocluster_size must be (min, max) with 4 ≤ min ≤ max ≤ 200, "
                             f"got {self.nanocluster_size!r}")
        s(self, "nanocluster_size", (lo, hi))
        s(self, "pattern", resolve_option(self.pattern, Pattern, "pattern").value)
        s(self, "cluster_process", resolve_option(self.cluster_process, ClusterProcess,
                                                  "cluster_process").value)
        s(self, "vacuum", resolve_option(self.vacuum, Vacuum, "vacuum").value)
        s(self, "dtype", resolve_option(str(np.dtype(self.dtype)) if self.dtype in
                                        (np.uint16, np.uint32, np.float32) else self.dtype,
                                        OutputDtype, "dtype").value)
        d = tuple(float(v) for v in np.broadcast_to(np.asarray(self.drift_px, float), (2,)))
        s(self, "drift_px", d)
        sc = DTYPE_SCALE[self.dtype]
        if self.gain is None:
            s(self, "gain", self._GAIN32 * sc)
        if self.offset is None:
            s(self, "offset", self._OFFSET32 * sc)
        if self.read_noise is None:
            s(self, "read_noise", self._READ32 * sc)
        s(self, "gain", check_positive(self.gain, name="gain"))
        s(self, "offset", check_positive(self.offset, name="offset", allow_zero=True))
        s(self, "read_noise", check_positive(self.read_noise, name="read_noise", allow_zero=True))
        s(self, "fringes", bool(self.fringes))
        s(self, "noise", bool(self.noise))
        s(self, "seed", int(self.seed) if self.seed is not None else 0)

    def replace(self, **changes) -> "SimulationParams":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
