"""Point patterns with known truth, in world pixel coordinates of a field.

A pattern is built from *units*: a single atom, a dimer, a trimer or a small
nanocluster raft. Unit sizes are drawn so that the expected fraction of
*atoms* in each kind of unit equals what was asked. Unit centres follow

* ``random``: a homogeneous Poisson process on the support (CSR);
* ``clustered``: a Thomas (Gaussian) or Matérn (uniform disc) cluster process
  whose parents are Poisson over an enlarged window (no edge effects);
* ``nanoclusters``: like ``random``, with part of the atoms in rafts.

Atoms of different units keep at least ``min_separation_nm`` apart (conflicting
units are re-drawn, not dropped, so the loading stays as asked); atoms of one
unit sit at the element's bond length. Units with any atom off the support
(closer than ``surface_margin_nm`` to vacuum) are re-drawn too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .elements import element

__all__ = ["AtomSet", "generate_atoms", "unit_offsets"]


@dataclass(frozen=True)
class AtomSet:
    """Atoms in world pixel coordinates: ``xy`` (N, 2) [x, y], ``element`` (N,)
    str, ``unit_id`` (N,) int64, ``unit_size`` (N,) int64, ``parent_id`` (N,)
    int64 (Thomas/Matérn cluster, −1 otherwise)."""

    xy: np.ndarray
    element: np.ndarray
    unit_id: np.ndarray
    unit_size: np.ndarray
    parent_id: np.ndarray


def _hex_raft(k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` sites of a unit-spacing triangular lattice nearest to a random
    point near the origin: compact 2-D rafts of varied shape."""
    n = int(np.ceil(np.sqrt(k))) + 3
    i, j = np.mgrid[-n:n + 1, -n:n + 1]
    pts = np.stack([i + 0.5 * j, j * np.sqrt(3) / 2], axis=-1).reshape(-1, 2)
    c = rng.uniform(-0.5, 0.5, 2)
    d = np.hypot(*(pts - c).T) + rng.uniform(0, 0.05, len(pts))  # random tie-breaks
    sel = pts[np.argsort(d)[:k]]
    return sel - sel.mean(axis=0)


def unit_offsets(k: int, bond_px: float, rng: np.random.Generator) -> np.ndarray:
    """(k, 2) atom offsets of one unit (random in-plane orientation)."""
    if k == 1:
        base = np.zeros((1, 2))
    elif k == 2:
        base = np.array([[-0.5, 0.0], [0.5, 0.0]])
    elif k == 3:
        base = np.array([[0.0, 1 / np.sqrt(3)], [-0.5, -0.5 / np.sqrt(3)], [0.5, -0.5 / np.sqrt(3)]])
    else:
        base = _hex_raft(k, rng)
    th = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    # small bond-length disorder (±2 %) as in supported clusters
    return (base @ rot.T) * bond_px * (1 + 0.02 * rng.standard_normal((k, 1)))


def _unit_types(p) -> tuple[np.ndarray, np.ndarray]:
    """Unit sizes and their probabilities so that atom fractions are as asked."""
    fd, ft = p.dimer_fraction, p.trimer_fraction
    sizes, atom_frac = [1, 2, 3], [1.0 - fd - ft, fd, ft]
    if p.pattern == "nanoclusters":
        f = p.nanocluster_fraction
        atom_frac = [a * (1 - f) for a in atom_frac]
        ks = list(range(p.nanocluster_size[0], p.nanocluster_size[1] + 1))
        sizes += ks
        atom_frac += [f / len(ks)] * len(ks)
    sizes = np.asarray(sizes)
    w = np.asarray(atom_frac) / sizes
    keep = w > 0
    return sizes[keep], w[keep] / w[keep].sum()


def generate_atoms(p, *, width: int, height: int, support_nm, support_area_nm2: float,
                   rng: np.random.Generator, max_rounds: int = 200) -> AtomSet:
    """Draw the atoms of a field of ``width`` × ``height`` px.

    Parameters
    ----------
    p : SimulationParams
    support_nm : callable
        ``support_nm(xy) -> (N,) float``: signed distance into the support in
        nm (≤ 0 is vacuum) at world positions ``xy`` (N, 2) px.
    support_area_nm2 : float
        Support area of the field, nm² (for the expected atom count).
    rng : numpy Generator
    """
    px = p.pixel_size_nm
    sizes, probs = _unit_types(p)
    mean_size = float((sizes * probs).sum())
    els = [element(e) for e in p.elements]
    efrac = np.asarray(p.element_fractions if p.element_fractions else [1 / len(els)] * len(els))
    margin = p.surface_margin_nm
    dmin = p.min_separation_nm / px
    clustered = p.pattern == "clustered"
    rc = p.cluster_radius_nm / px

    # -- unit centres
    if clustered:
        pad = 4 * rc
        area_ext = (width + 2 * pad) * (height + 2 * pad) * px * px
        kappa = p.loading_per_nm2 / (mean_size * p.sites_per_cluster)
        n_par = rng.poisson(kappa * area_ext)
        parents = np.column_stack([rng.uniform(-pad, width + pad, n_par) - 0.5,
                                   rng.uniform(-pad, height + pad, n_par) - 0.5])
        n_sites = rng.poisson(p.sites_per_cluster, n_par)
        parent_of = np.repeat(np.arange(n_par), n_sites)

        def draw_around(par_idx):
            n = len(par_idx)
            if p.cluster_process == "thomas":
                d = rng.normal(0.0, rc, (n, 2))
            else:
                r = rc * np.sqrt(rng.uniform(0, 1, n))
                a = rng.uniform(0, 2 * np.pi, n)
                d = np.column_stack([r * np.cos(a), r * np.sin(a)])
            return parents[par_idx] + d

        centres = draw_around(parent_of)
    else:
        n_units_field = rng.poisson(p.loading_per_nm2 / mean_size * width * height * px * px)
        centres = np.column_stack([rng.uniform(-0.5, width - 0.5, n_units_field),
                                   rng.uniform(-0.5, height - 0.5, n_units_field)])
        parent_of = np.full(len(centres), -1)
    # Thinning to the field and the support keeps a Poisson process of the
    # asked intensity on the support.
    inside = ((centres[:, 0] >= -0.5) & (centres[:, 0] < width - 0.5)
              & (centres[:, 1] >= -0.5) & (centres[:, 1] < height - 0.5))
    centres, parent_of = centres[inside], parent_of[inside]
    if len(centres):
        on = support_nm(centres) > margin
        centres, parent_of = centres[on], parent_of[on]
    n_units = len(centres)
    unit_k = rng.choice(sizes, n_units, p=probs) if n_units else np.zeros(0, int)
    unit_el = rng.choice(len(els), (n_units, int(sizes.max())), p=efrac)
    bond = np.array([np.mean([els[e].bond_nm for e in unit_el[u, :unit_k[u]]]) / px
                     for u in range(n_units)])
    offsets = [unit_offsets(int(k), b, rng) for k, b in zip(unit_k, bond)]

    def redraw_centres(idx):
        if clustered:
            return draw_around(parent_of[idx])
        return np.column_stack([rng.uniform(-0.5, width - 0.5, len(idx)),
                                rng.uniform(-0.5, height - 0.5, len(idx))])

    atom_unit = np.repeat(np.arange(n_units), unit_k)
    first = np.concatenate([[0], np.cumsum(unit_k)[:-1]]).astype(int) if n_units else np.zeros(0, int)
    off = np.concatenate(offsets) if n_units else np.zeros((0, 2))
    bad = np.arange(n_units)  # units to (re)check
    for _ in range(max_rounds):
        xy = centres[atom_unit] + off
        # a unit is bad if any atom is off the support or outside the field
        ok_atom = support_nm(xy) > margin if len(xy) else np.zeros(0, bool)
        ok_atom &= ((xy[:, 0] >= -0.5) & (xy[:, 0] < width - 0.5)
                    & (xy[:, 1] >= -0.5) & (xy[:, 1] < height - 0.5))
        bad_units = np.zeros(n_units, bool)
        np.logical_or.at(bad_units, atom_unit[~ok_atom], True)
        if len(xy) > 1 and dmin > 0:
            pairs = cKDTree(xy).query_pairs(dmin, output_type="ndarray")
            pairs = pairs[atom_unit[pairs[:, 0]] != atom_unit[pairs[:, 1]]]
            # re-draw the later unit of each conflicting pair (earlier ones stay put)
            bad_units[np.maximum(atom_unit[pairs[:, 0]], atom_unit[pairs[:, 1]])] = True
        bad = np.flatnonzero(bad_units)
        if not len(bad):
            break
        new = redraw_centres(bad)
        centres[bad] = new
    else:
        # give up on the last few stubborn units (dense loading): drop them
        keep_u = np.ones(n_units, bool)
        keep_u[bad] = False
        sel = keep_u[atom_unit]
        xy = xy[sel]
        atom_unit = atom_unit[sel]
    k_atom = unit_k[atom_unit] if n_units else np.zeros(0, int)
    pos_in_unit = np.arange(len(atom_unit)) - first[atom_unit] if n_units else np.zeros(0, int)
    el_idx = unit_el[atom_unit, pos_in_unit] if n_units else np.zeros(0, int)
    symbols = np.array([e.symbol for e in els])[el_idx] if len(el_idx) else np.zeros(0, "<U2")
    # renumber units 0..U-1 in order of appearance
    _, uid = np.unique(atom_unit, return_inverse=True)
    return AtomSet(np.ascontiguousarray(xy, np.float64), symbols.astype("<U2"),
                   uid.astype(np.int64), k_atom.astype(np.int64),
                   parent_of[atom_unit].astype(np.int64) if n_units else np.zeros(0, np.int64))
