"""Image formation: support, atoms, scan and detector, over any region of a field.

A :class:`Field` is the whole simulated area (one frame, or a whole montage).
Everything random in it is either drawn once per field (the atoms, from
``default_rng([seed, 0])``) or is a counter-based hash of the seed and the
*global* pixel/lattice coordinates (support texture, vacuum, scan-line jitter
and gain). :meth:`Field.expected` of a region therefore equals the same
region cut from a whole-field call, which makes montage chunks seamless. Only
the shot/read noise of :meth:`Field.render` is drawn per call, from the
generator the caller passes (per chunk: seeded by the chunk index).

Physics (units in brackets):

* incident electrons per pixel ``N0 = dose [e/Å²] · (100 · pixel_size_nm²) [Å²]``;
* support: detected fraction ``t(x) · support_haadf_per_nm · (1 + texture)``
  with thickness ``t`` [nm] varying slowly, tapering to a thin rim at a
  vacuum edge/hole and zero in vacuum;
* an atom of atomic number Z: integrated detected electrons
  ``dose · cross_section_A2 · (Z/78)^z_exponent`` spread by a Gaussian probe
  (FWHM ``probe_fwhm_nm``) sampled at pixel centres (STEM samples the probe
  position, it does not integrate over a pixel);
* scan: slow linear drift (image row ``r`` samples world
  ``(c − dx·r/H − jitter_r, r − dy·r/H)``) and per-line x jitter and gain;
* detector: Poisson electrons, each with a pulse height of mean ``gain``
  and spread ``gain_cv`` (normal approximation of the sum), plus dark
  ``offset`` and Gaussian ``read_noise``.
"""

from __future__ import annotations

import numpy as np

from . import _noise
from .elements import element
from .patterns import AtomSet, generate_atoms

__all__ = ["Field"]

_COARSE = 4  # px between nodes of the grid that carries the smooth fields
# hash streams (kept fixed: changing one changes every simulated image)
_S_EDGE, _S_HOLES, _S_THICK, _S_TEX, _S_FINE, _S_FRINGE, _S_JIT, _S_LGAIN, _S_GEOM = range(1, 10)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class Field:
    """The simulated area of ``height`` × ``width`` px described by ``params``.

    Attributes
    ----------
    atoms : AtomSet
        Atoms in world pixel coordinates.
    xy_image : (N, 2) float64
        Where each atom appears in the image (after drift), [x, y] px.
    support_area_nm2 : float
        Area available to atoms (distance to vacuum > surface_margin_nm).
    """

    def __init__(self, params, *, height: int | None = None, width: int | None = None):
        p = self.p = params
        self.height = int(height or p.size)
        self.width = int(width or p.size)
        self.px = p.pixel_size_nm
        self.seed = p.seed
        geom = _noise.hash_uniform(_noise.stream_key(p.seed, _S_GEOM), np.arange(4, dtype=np.int64))
        self._edge_angle = geom[0] * 2 * np.pi
        # vacuum level: choose the iso-level so that vacuum_fraction of the field is vacuum
        step = max(1, int(np.ceil(max(self.height, self.width) / 512)))
        gy, gx = np.mgrid[0:self.height:step, 0:self.width:step].astype(np.float64)
        self._vac_level = 0.0
        if p.vacuum != "none":
            d0 = self._d0(gx, gy)
            self._vac_level = float(np.quantile(d0, p.vacuum_fraction)) if p.vacuum_fraction > 0 \
                else float(d0.min()) - 1.0
            frac = float(np.mean(d0 - self._vac_level > p.surface_margin_nm))
        else:
            frac = 1.0
        self.support_area_nm2 = frac * self.height * self.width * self.px ** 2
        rng = np.random.default_rng([p.seed, 0])
        self.atoms: AtomSet = generate_atoms(p, width=self.width, height=self.height,
                                             support_nm=self.support_nm,
                                             support_area_nm2=self.support_area_nm2, rng=rng)
        n = len(self.atoms.xy)
        z = np.array([element(e).z for e in self.atoms.element], float) if n else np.zeros(0)
        sigma0 = p.probe_fwhm_nm / self.px / (2 * np.sqrt(2 * np.log(2)))
        self.sigma_px = sigma0 * np.exp(p.atom_blur_cv * rng.standard_normal(n))
        inten = np.exp(p.atom_intensity_cv * rng.standard_normal(n) - 0.5 * p.atom_intensity_cv ** 2)
        # integrated detected electrons → peak electrons per pixel of a sampled Gaussian
        self.atom_electrons = p.dose * p.cross_section_A2 * (z / 78.0) ** p.z_exponent * inten
        self.atom_peak = self.atom_electrons / (2 * np.pi * self.sigma_px ** 2)
        dx, dy = p.drift_px
        ax, ay = self.atoms.xy.T if n else (np.zeros(0), np.zeros(0))
        r_img = ay / (1.0 - dy / self.height)
        self.xy_image = np.column_stack([ax + dx * r_img / self.height, r_img])

    # ------------------------------------------------------------------ fields
    def _d0(self, x, y):
        """Unshifted vacuum field (≈ nm into the support) at world px."""
        p, px = self.p, self.px
        if p.vacuum == "edge":
            c, s = np.cos(self._edge_angle), np.sin(self._edge_angle)
            base = (c * (x - self.width / 2) + s * (y - self.height / 2)) * px
            wob = _noise.fbm_fast(self.seed, _S_EDGE, x, y, [6.0 / px, 1.5 / px],
                                  [1.0, 0.15])
            return base + wob
        if p.vacuum == "holes":
            return _noise.fbm_fast(self.seed, _S_HOLES, x, y, [12.0 / px, 5.0 / px], [3.0, 1.0])
        return np.full(np.broadcast(x, y).shape, 1e6)

    def support_nm(self, xy) -> np.ndarray:
        """Signed distance into the support (nm, ≤ 0 in vacuum) at world positions (N, 2)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return self._d0(xy[:, 0], xy[:, 1]) - self._vac_level

    def _row_shift(self, rows):
        """World-x and world-y offsets of image rows: drift plus line jitter."""
        dx, dy = self.p.drift_px
        rows = np.asarray(rows, np.float64)
        jit = self.p.line_jitter_px * _noise.hash_normal(_noise.stream_key(self.seed, _S_JIT),
                                                         rows.astype(np.int64))
        return dx * rows / self.height + jit, dy * rows / self.height

    def _smooth_fields(self, r0, c0, h, w):
        """Vacuum distance, thickness factor and texture on the coarse global
        grid, bilinearly interpolated to the region (drift only: sub-pixel
        line jitter is negligible at these scales)."""
        p, px, S = self.p, self.px, _COARSE
        g0r, g1r = r0 // S, (r0 + h - 1) // S + 1
        g0c, g1c = c0 // S, (c0 + w - 1) // S + 1
        gr = np.arange(g0r, g1r + 1) * S
        gc = np.arange(g0c, g1c + 1) * S
        R, C = np.meshgrid(gr.astype(np.float64), gc.astype(np.float64), indexing="ij")
        dx, dy = p.drift_px
        X = C - dx * R / self.height
        Y = R - dy * R / self.height
        fields = [self._d0(X, Y) - self._vac_level]
        fields.append(_noise.fbm_fast(self.seed, _S_THICK, X, Y, [10.0 / px, 4.0 / px],
                                      [p.thickness_variation, 0.5 * p.thickness_variation]))
        fields.append(_noise.fbm_fast(self.seed, _S_TEX, X, Y, [3.0 / px, 1.2 / px, 0.5 / px],
                                      [p.texture, 0.6 * p.texture, p.atomic_texture]))
        if p.fringes:
            fields.append(_noise.fbm_fast(self.seed, _S_FRINGE, X, Y, [3.0 / px], [1.0]))
        # separable linear interpolation, nodes at global multiples of S
        rr = np.arange(r0, r0 + h)
        cc = np.arange(c0, c0 + w)
        i0, fr = rr // S - g0r, ((rr % S) / S)[:, None]
        j0, fc = cc // S - g0c, (cc % S) / S
        out = []
        for F in fields:
            t = F[i0] * (1 - fr) + F[i0 + 1] * fr
            out.append(np.ascontiguousarray(t[:, j0] * (1 - fc) + t[:, j0 + 1] * fc))
        return out

    def support_mask(self, r0: int = 0, c0: int = 0, h: int | None = None, w: int | None = None):
        """Boolean (h, w) mask of support pixels (False = vacuum) of a region."""
        h = self.height - r0 if h is None else h
        w = self.width - c0 if w is None else w
        return self._smooth_fields(r0, c0, h, w)[0] > 0

    # ------------------------------------------------------------------ image
    def expected(self, r0: int = 0, c0: int = 0, h: int | None = None, w: int | None = None):
        """Noise-free expected detected electrons per pixel, (h, w) float64."""
        p, px = self.p, self.px
        h = self.height - r0 if h is None else int(h)
        w = self.width - c0 if w is None else int(w)
        flds = self._smooth_fields(r0, c0, h, w)
        dist, thick, tex = flds[:3]
        rows = np.arange(r0, r0 + h)
        sx, sy = self._row_shift(rows)
        cc = np.arange(c0, c0 + w, dtype=np.float64)
        X = cc[None, :] - sx[:, None]
        Y = np.broadcast_to((rows - sy)[:, None], (h, w))
        X = np.ascontiguousarray(X)
        Y = np.ascontiguousarray(Y, dtype=np.float64)
        if p.fine_texture:
            _noise.octave_add(tex, self.seed, _S_FINE * 64, X, Y, 0.15 / px, p.fine_texture)
        taper = _smoothstep(dist / p.edge_taper_nm)  # continuous: no step at the edge
        t_nm = p.support_thickness_nm * np.maximum(1.0 + thick, 0.05) * taper
        frac = t_nm * p.support_haadf_per_nm * np.maximum(1.0 + tex, 0.0) + p.vacuum_haadf
        if p.fringes:
            env = np.clip(2.0 * flds[3] - 1.0, 0.0, 1.0)
            g = _noise.hash_uniform(_noise.stream_key(self.seed, _S_FRINGE), np.arange(4, dtype=np.int64))
            a = g[0] * np.pi
            k = 2 * np.pi * px / p.fringe_spacing_nm
            frac *= 1.0 + p.fringe_amplitude * env * np.cos(k * (np.cos(a) * X + np.sin(a) * Y)
                                                           + 2 * np.pi * g[1])
        img = frac * (p.dose * 100.0 * px * px)
        self._add_atoms(img, r0, c0, sx, sy)
        img *= 1.0 + p.line_gain_jitter * _noise.hash_normal(_noise.stream_key(self.seed, _S_LGAIN),
                                                              rows.astype(np.int64))[:, None]
        return img

    def _add_atoms(self, img, r0, c0, sx, sy):
        h, w = img.shape
        if not len(self.xy_image):
            return
        R = int(np.ceil(4.5 * self.sigma_px.max() + 2 + abs(self.p.line_jitter_px) * 4))
        xi, yi = self.xy_image.T
        sel = np.flatnonzero((xi > c0 - R - 1) & (xi < c0 + w + R) & (yi > r0 - R - 1) & (yi < r0 + h + R))
        if not len(sel):
            return
        off = np.arange(-R, R + 1)
        ax, ay = self.atoms.xy[sel].T
        cr = np.floor(yi[sel] + 0.5).astype(np.int64)
        ccen = np.floor(xi[sel] + 0.5).astype(np.int64)
        rows = cr[:, None] + off[None, :]                # (n, K) global rows
        cols = ccen[:, None] + off[None, :]              # (n, K) global cols
        rin = (rows >= r0) & (rows < r0 + h)
        cin = (cols >= c0) & (cols < c0 + w)
        rl = np.clip(rows - r0, 0, h - 1)
        # world coordinates sampled by each (row, col) of each atom window
        wx = cols[:, None, :] - sx[rl][:, :, None]       # (n, K, K)
        wy = (rows - sy[rl])[:, :, None]
        s2 = (2 * self.sigma_px[sel] ** 2)[:, None, None]
        val = self.atom_peak[sel][:, None, None] * np.exp(
            -((wx - ax[:, None, None]) ** 2 + (wy - ay[:, None, None]) ** 2) / s2)
        m = rin[:, :, None] & cin[:, None, :]
        flat = (rl[:, :, None] * w + np.clip(cols - c0, 0, w - 1)[:, None, :])
        img.reshape(-1)[:] += np.bincount(flat[m], weights=val[m], minlength=h * w)

    def render(self, r0: int = 0, c0: int = 0, h: int | None = None, w: int | None = None, *,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """Detector counts of a region as float64 (noise from ``rng`` when
        ``params.noise``); the caller converts to the output dtype."""
        p = self.p
        lam = self.expected(r0, c0, h, w)
        if not p.noise:
            return p.offset + p.gain * lam
        rng = rng if rng is not None else np.random.default_rng([p.seed, 1])
        n = rng.poisson(lam).astype(np.float64)
        # sum of n pulses with mean 1 and spread gain_cv (normal approximation)
        pulses = n + p.gain_cv * np.sqrt(n) * rng.standard_normal(n.shape)
        out = p.offset + p.gain * np.maximum(pulses, 0.0)
        if p.read_noise:
            out += p.read_noise * rng.standard_normal(out.shape)
        return out


def to_dtype(img: np.ndarray, dtype: str) -> np.ndarray:
    """Round and clip detector counts into ``dtype``."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return img.astype(dt)
    info = np.iinfo(dt)
    return np.clip(np.rint(img), info.min, info.max).astype(dt)
