"""Species accuracy on simulated truth: fastsac's Z-contrast mixture vs the published
autoencoder + Gaussian-mixture approach.

Rows (:data:`ROWS`): Pt+Pd (equal amounts) at 1e4, 4e4 (the simulator's
default) and 1.6e5 e/Å², Pt+Ni, Pt+Ir and pure Pt at 4e4, ``--frames`` 512²
frames each (seeds 1…, 0.3 atoms/nm²). Two protocols:

* ``true positions``: the species stage alone, on the simulator's atom
  positions (what species assignment can do when detection is perfect);
* ``end to end``: ``fastsac.pipeline.analyze(..., elements=...)``; accuracy over
  detections matched one-to-one to a true atom (Hungarian, 6 px), fraction
  error against the true composition of *all* atoms in the frame (undetected
  atoms count); recall per element and unmatched (false) detections.

Methods:

* ``fastsac``: :func:`fastsac.species.species_of_atoms` per frame with the
  named elements (fixed-shape photometry with errors → Z-ratio-tied mixture);
  a frame reported "not separable" / "one intensity class" labels no atom
  (accuracy 0 for those atoms, no fraction);
* ``fastsac, no elements``: number of intensity classes chosen from the data
  (reported: how often the right number was found);
* ``autoencoder + GMM`` (baseline, after the published workflow): 21×21 patches
  around each atom, background-subtracted, a small convolutional autoencoder
  (torch, latent 8, trained per image set = the frames of one scenario and
  dose, flips/rotations as augmentation), a Gaussian mixture with one
  component per element on the latent vectors, components named by their
  mean patch brightness (brightest = heaviest).

Accuracy is pooled over atoms; fraction error is the mean over frames of
|estimated − true| fraction of the heaviest element. The autoencoder baseline
is trained and scored on the first ``--ae-frames`` frames of each row only
(it costs ~30 s per frame on 2 CPU cores). Run::

    FASTSAC_SHARED=/work/shared PYTHONPATH=src python benchmarks/species_accuracy.py \
        [--frames 6] [--ae-frames 2] [--rows all] [--json docs/species_accuracy.json]
    ... --study intensity --frames 6   # intensity measures: spread, d', best threshold
    ... --study detection --frames 4   # light-element recall vs false atoms, with decoys
    ... --table-from docs/species_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastsac.evaluate import match_points  # noqa: E402
from fastsac.io import Micrograph  # noqa: E402
from fastsac.pipeline import analyze  # noqa: E402
from fastsac.species import atomic_number, fit_gmm, species_of_atoms  # noqa: E402
from fastsac.synth import simulate  # noqa: E402

#: (elements, dose) rows: Pt+Pd across dose, the other pairs at the simulator's default dose.
ROWS = [(("Pt", "Pd"), 1e4), (("Pt", "Pd"), 4e4), (("Pt", "Pd"), 1.6e5), (("Pt", "Ni"), 4e4),
        (("Pt", "Ir"), 4e4), (("Pt",), 4e4)]
PX = 0.0293


# --------------------------------------------------------------------------- baseline


def patches(image: np.ndarray, xy: np.ndarray, size: int = 21) -> np.ndarray:
    """(N, size, size) patches centred on the rounded positions (edge-padded),
    minus each patch's border median (the local support)."""
    r = size // 2
    img = np.pad(np.asarray(image, np.float64), r, mode="edge")
    c = np.floor(np.asarray(xy) + 0.5).astype(int) + r
    out = np.stack([img[y - r:y + r + 1, x - r:x + r + 1] for x, y in c]) if len(c) else np.zeros((0, size, size))
    border = np.concatenate([out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1]], axis=1)
    return out - np.median(border, axis=1)[:, None, None]


def autoencoder_gmm(patch_sets: list, n_species: int, *, latent: int = 8, epochs: int = 40,
                    seed: int = 0) -> list:
    """The published approach: conv autoencoder latent + GMM, trained on the
    patches of one image set. Returns per set (N,) class 0 … K−1, 0 = dimmest."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    allp = np.concatenate(patch_sets)
    scale = float(np.percentile(np.abs(allp), 99)) or 1.0
    x = torch.tensor(allp / scale, dtype=torch.float32)[:, None]
    aug = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(4)]
                    + [torch.rot90(x.flip(3), k, (2, 3)) for k in range(4)])

    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 10
                                     nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 5
                                     nn.Flatten(), nn.Linear(32 * 25, latent))
            self.dec = nn.Sequential(nn.Linear(latent, 32 * 25), nn.ReLU(), nn.Unflatten(1, (32, 5, 5)),
                                     nn.Upsample(size=10), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
                                     nn.Upsample(size=21), nn.Conv2d(16, 1, 3, padding=1))

        def forward(self, v):
            return self.dec(self.enc(v))

    net = AE()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(aug), generator=gen)
        for i in range(0, len(aug), 128):
            b = aug[perm[i:i + 128]]
            loss = ((net(b) - b) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        z = net.enc(x).numpy().astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)
    gm = fit_gmm(z, n_components=n_species, seed=seed)
    lab = np.argmax(gm.predict_proba(z), 1)
    # components named by mean brightness of the central 5×5 (brightest = heaviest)
    centre = allp[:, 8:13, 8:13].sum((1, 2))
    bright = [centre[lab == k].mean() if np.any(lab == k) else -np.inf for k in range(n_species)]
    rank = np.argsort(np.argsort(bright))
    lab = rank[lab]
    out, i = [], 0
    for p in patch_sets:
        out.append(lab[i:i + len(p)])
        i += len(p)
    return out


# --------------------------------------------------------------------------- protocol


def run(frames: int, rows_wanted, *, ae: bool = True, ae_frames: int = 2, species_kw: dict | None = None) -> list:
    species_kw = species_kw or {}
    rows = []
    for els, dose in rows_wanted:
        order = sorted(els, key=atomic_number)  # dimmest first
        heavy = order[-1]
        t0 = time.perf_counter()
        sims = [simulate(size=512, elements=els, dose=dose, seed=s, loading_per_nm2=0.3)
                for s in range(1, frames + 1)]
        row = {"elements": "+".join(els), "dose": dose, "frames": frames,
               "true_atoms": {e: int(sum(np.sum(tr.element == e) for _, tr in sims)) for e in order}}
        for proto in ("true positions", "end to end"):
            right = total = 0
            ferr, statuses, nfree, snrs = [], [], [], []
            ae_sets, ae_truth = [], []
            found = {e: 0 for e in order}
            false_atoms = 0
            for fi, (img, tr) in enumerate(sims):
                true_frac = float(np.mean(tr.element == heavy))
                if proto == "true positions":
                    xy, el = tr.xy, tr.element
                    sp = species_of_atoms(img.astype(np.float32), xy, pixel_size_nm=PX, elements=els,
                                          **species_kw)
                    free = species_of_atoms(img.astype(np.float32), xy, pixel_size_nm=PX)
                    lab_sp, lab_el = sp.species, el
                else:
                    m = Micrograph(img.astype(np.float32), PX, "synth", "sim", {})
                    res = analyze(m, elements=els, support_mask=False, pair_correlation=False)
                    sp = res.species
                    free = species_of_atoms(m.data, res.detections.xy, pixel_size_nm=PX)
                    mr = match_points(res.detections.xy, tr.xy, tolerance_px=6)
                    xy = res.detections.xy
                    lab_sp, lab_el = sp.species[mr.pairs[:, 0]], tr.element[mr.pairs[:, 1]]
                    el = np.full(len(xy), "", dtype=object)
                    el[mr.pairs[:, 0]] = tr.element[mr.pairs[:, 1]]
                    for e in order:
                        found[e] += int(np.sum(lab_el == e))
                    false_atoms += mr.fp
                statuses.append(sp.status)
                snrs.append(sp.lightest_snr)
                nfree.append(free.n_classes if free.status == "ok" else 0)
                right += int(np.sum(lab_sp == lab_el))
                total += len(lab_el)
                if sp.status == "ok":
                    lab = sp.species[sp.species != ""]
                    ferr.append(abs(float(np.mean(lab == heavy)) - true_frac) if len(lab) else np.nan)
                if fi < ae_frames:
                    ae_sets.append(patches(img, xy))
                    ae_truth.append((el, true_frac))
            key = "tp" if proto == "true positions" else "e2e"
            row[f"{key}_accuracy"] = right / total if total else float("nan")
            row[f"{key}_atoms"] = total
            row[f"{key}_fraction_error"] = float(np.nanmean(ferr)) if ferr and np.isfinite(ferr).any() else None
            row[f"{key}_status"] = {s: statuses.count(s) for s in sorted(set(statuses))}
            row[f"{key}_free_classes"] = nfree
            row[f"{key}_lightest_snr"] = float(np.median(snrs)) if len(order) > 1 else None
            if key == "e2e":
                row["e2e_recall"] = {e: found[e] / max(row["true_atoms"][e], 1) for e in order}
                row["e2e_false_atoms"] = false_atoms
            if ae and len(els) > 1 and all(len(p) >= 1 for p in ae_sets):
                labs = autoencoder_gmm(ae_sets, len(els))
                r2 = t2 = 0
                fe = []
                for lab, (el, true_frac) in zip(labs, ae_truth):
                    names = np.array(order, dtype=object)[lab]
                    matched = el != ""
                    r2 += int(np.sum(names[matched] == el[matched]))
                    t2 += int(matched.sum())
                    fe.append(abs(float(np.mean(names == heavy)) - true_frac))
                row[f"{key}_ae_accuracy"] = r2 / t2 if t2 else float("nan")
                row[f"{key}_ae_fraction_error"] = float(np.mean(fe))
                row[f"{key}_ae_atoms"] = t2
            elif ae and len(els) == 1:
                row[f"{key}_ae_accuracy"] = 1.0  # one species: one cluster, trivially right
                row[f"{key}_ae_fraction_error"] = 0.0
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows) -> str:
    def f(v, pct=True):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "–"
        return f"{100 * v:.0f} %" if pct else f"{v:.2f}"

    lines = ["| elements | dose e/Å² | protocol | atoms | fastsac accuracy | fastsac fraction error | "
             "fastsac status (frames) | classes without --elements | lightest element S/N | "
             "recall per element; false atoms | AE+GMM accuracy (atoms) | AE+GMM fraction error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for key, name in (("tp", "true positions"), ("e2e", "end to end")):
            st = ", ".join(f"{k} {v}" for k, v in r[f"{key}_status"].items())
            rec = ("–" if key == "tp" else
                   ", ".join(f"{e} {f(v)}" for e, v in r["e2e_recall"].items()) + f"; {r['e2e_false_atoms']}")
            ae_n = r.get(f"{key}_ae_atoms")
            lines.append(f"| {r['elements']} | {r['dose']:.2g} | {name} | {r[f'{key}_atoms']} | "
                         f"{f(r[f'{key}_accuracy'])} | {f(r[f'{key}_fraction_error'])} | {st} | "
                         f"{r[f'{key}_free_classes']} | {f(r.get(f'{key}_lightest_snr'), pct=False)} | {rec} | "
                         f"{f(r.get(f'{key}_ae_accuracy'))}"
                         f"{f' ({ae_n})' if ae_n else ''} | {f(r.get(f'{key}_ae_fraction_error'))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- studies


def _plane_photometry(image, xy, *, sigma_px: float, radius_px: int, order: int) -> np.ndarray:
    """Integrated intensity from a fixed-σ Gaussian plus a polynomial background of
    ``order`` (0 constant, 1 plane, 2 quadratic) in a disc: the variants the
    intensity study compares with :func:`fastsac.species.photometry` (order 0)."""
    img = np.asarray(image, np.float64)
    h, w = img.shape
    oy, ox = np.mgrid[-radius_px:radius_px + 1, -radius_px:radius_px + 1]
    disc = oy**2 + ox**2 <= radius_px**2
    oy, ox = oy[disc], ox[disc]
    out = np.full(len(xy), np.nan)
    for i, (x, y) in enumerate(np.asarray(xy, np.float64)):
        px_, py_ = int(np.floor(x + 0.5)) + ox, int(np.floor(y + 0.5)) + oy
        ins = (px_ >= 0) & (px_ < w) & (py_ >= 0) & (py_ < h)
        px_, py_ = px_[ins], py_[ins]
        g = np.exp(-((px_ - x) ** 2 + (py_ - y) ** 2) / (2 * sigma_px**2))
        u, t = (px_ - x) / radius_px, (py_ - y) / radius_px
        cols = [g, np.ones_like(g)] + ([u, t] if order >= 1 else []) + ([u * u, u * t, t * t] if order >= 2 else [])
        coef = np.linalg.lstsq(np.column_stack(cols), img[py_, px_], rcond=None)[0]
        out[i] = 2 * np.pi * sigma_px**2 * coef[0]
    return out


def intensity_study(frames: int, dose: float = 4e4) -> str:
    """Within-species spread and Pt/Pd separation of per-atom intensity measures at
    the true positions of ``frames`` Pt+Pd frames: robust relative spread (1.4826·MAD
    / median) per species, median ratio, d' of log intensity (robust sd) and the
    accuracy of the best single threshold (an upper bound for any classifier on
    this one number)."""
    from fastsac.species import photometry

    sims = [simulate(size=512, elements=("Pt", "Pd"), dose=dose, seed=s, loading_per_nm2=0.3)
            for s in range(1, frames + 1)]
    el = np.concatenate([tr.element for _, tr in sims])
    variants = [("photometry σ 3.31 px, disc 9 px, constant background (shipped)",
                 lambda im, xy: photometry(im, xy, sigma_px=3.31).intensity)]
    for sig, rad, order in ((2.5, 11, 0), (3.0, 11, 1), (3.6, 11, 1), (3.6, 14, 2), (4.2, 11, 1)):
        variants.append((f"σ {sig} px, disc {rad} px, background order {order}",
                         lambda im, xy, a=sig, b=rad, c=order: _plane_photometry(im, xy, sigma_px=a, radius_px=b,
                                                                                order=c)))
    lines = [f"Pt+Pd, dose {dose:g} e/Å², {len(el)} atoms at their true positions ({frames} frames 512²)", "",
             "| intensity measure | Pd spread | Pt spread | Pt/Pd ratio | d' (log) | best threshold accuracy |",
             "|---|---|---|---|---|---|"]
    for name, fn in variants:
        inten = np.concatenate([fn(img.astype(np.float64), tr.xy) for img, tr in sims])
        parts = {}
        for e in ("Pd", "Pt"):
            v = inten[el == e]
            med = float(np.median(v))
            parts[e] = (med, 1.4826 * float(np.median(np.abs(v - med))) / med)
        logs = np.log(np.clip(inten, 1e-9 * parts["Pt"][0], None))
        lsd = {e: 1.4826 * float(np.median(np.abs(logs[el == e] - np.median(logs[el == e])))) for e in ("Pd", "Pt")}
        dp = (np.median(logs[el == "Pt"]) - np.median(logs[el == "Pd"])) / np.sqrt(0.5 * (lsd["Pd"]**2 + lsd["Pt"]**2))
        best = max(float(np.mean((inten > t) == (el == "Pt"))) for t in np.sort(inten))
        lines.append(f"| {name} | {parts['Pd'][1]:.2f} | {parts['Pt'][1]:.2f} | {parts['Pt'][0] / parts['Pd'][0]:.2f} | "
                     f"{dp:.2f} | {best:.1%} |")
    lines += ["", "What limits it (shipped photometry, same seeds, simulator terms switched off):", "",
              "| simulated frame | Pd spread | Pt spread | best threshold accuracy |", "|---|---|---|---|"]
    for name, kw in (("default", {}), ("no detector noise", {"noise": False}),
                     ("no atomic-scale or fine texture", {"atomic_texture": 0.0, "fine_texture": 0.0}),
                     ("neither", {"noise": False, "atomic_texture": 0.0, "fine_texture": 0.0})):
        sims = [simulate(size=512, elements=("Pt", "Pd"), dose=dose, seed=s, loading_per_nm2=0.3, **kw)
                for s in range(1, frames + 1)]
        inten = np.concatenate([photometry(img.astype(np.float64), tr.xy, sigma_px=3.31).intensity
                                for img, tr in sims])
        spread = {}
        for e in ("Pd", "Pt"):
            v = inten[el == e]
            spread[e] = 1.4826 * float(np.median(np.abs(v - np.median(v)))) / float(np.median(v))
        best = max(float(np.mean((inten > t) == (el == "Pt"))) for t in np.sort(inten))
        lines.append(f"| {name} | {spread['Pd']:.2f} | {spread['Pt']:.2f} | {best:.1%} |")
    return "\n".join(lines)


def detection_study(frames: int) -> str:
    """Recall of each element and false atoms of the classical detector on simulated
    truth when its threshold is lowered, with a DoG matched to the atom's size, and
    for the candidates between the lowered and the default threshold kept by
    photometric signal-to-noise; plus the same counts on the *negated* image (a
    decoy: dips of the support texture that pass the same test, i.e. what the test
    would let through from texture alone). Last rows: a support without texture."""
    from fastsac.detectors import ClassicalDetector
    from fastsac.species import photometry

    lines = ["| elements | dose e/Å² | support | rule | Pt found | light element found | false atoms | "
             "decoys (negated image) |", "|---|---|---|---|---|---|---|---|"]
    flat = {"texture": 0.0, "atomic_texture": 0.0, "fine_texture": 0.0, "thickness_variation": 0.0}
    default_rules = [(f"score ≥ {t}", lambda d, snr, t=t: d.score >= t) for t in (3.9, 3.5, 3.0, 2.5)]
    default_rules += [(f"score ≥ 3.9, or ≥ 2.5 with photometric S/N ≥ {q}",
                       lambda d, snr, q=q: (d.score >= 3.9) | (snr >= q)) for q in (6, 5, 4)]
    matched_rules = [(f"DoG σ 0.1 nm, score ≥ {t}", lambda d, snr, t=t: d.score >= t) for t in (3.0, 2.5, 2.0)]
    cases = [(("Pt", "Pd"), 4e4, "default", {}, 0.0586, default_rules),
             (("Pt", "Pd"), 4e4, "default", {}, 0.1, matched_rules),
             (("Pt", "Pd"), 1.6e5, "default", {}, 0.0586, default_rules),
             (("Pt", "Ni"), 4e4, "default", {}, 0.0586, default_rules),
             (("Pt", "Pd"), 4e4, "no texture", flat, 0.0586, default_rules[:1]),
             (("Pt", "Pd"), 1.6e5, "no texture", flat, 0.0586, default_rules[:1])]
    for els, dose, support, sim_kw, atom_sigma_nm, rules in cases:
        light = els[-1]
        # candidates down to the lowest threshold any rule of this case uses
        low = ClassicalDetector(threshold=2.5 if rules is default_rules else 2.0, atom_sigma_nm=atom_sigma_nm)
        sims = [simulate(size=512, elements=els, dose=dose, seed=s, loading_per_nm2=0.3, **sim_kw)
                for s in range(1, frames + 1)]
        cand = []
        for img, tr in sims:
            im = img.astype(np.float32)
            d = low.detect(Micrograph(im, PX, "synth", "sim", {}))
            dn = low.detect(Micrograph(-im, PX, "synth", "sim", {}))
            ph, phn = photometry(im, d.xy, sigma_px=3.31), photometry(-im, dn.xy, sigma_px=3.31)
            cand.append((d, ph.intensity / ph.intensity_err, dn, phn.intensity / phn.intensity_err, tr))
        n_true = {e: sum(int(np.sum(c[4].element == e)) for c in cand) for e in ("Pt", light)}
        for name, rule in rules:
            hit = {"Pt": 0, light: 0}
            fp = decoys = 0
            for d, snr, dn, snrn, tr in cand:
                keep = rule(d, snr)
                mr = match_points(d.xy[keep], tr.xy, tolerance_px=6)
                for e in hit:
                    hit[e] += int(np.sum(tr.element[mr.pairs[:, 1]] == e))
                fp += mr.fp
                decoys += int(np.sum(rule(dn, snrn)))
            lines.append(f"| {'+'.join(els)} | {dose:.2g} | {support} | {name} | {hit['Pt']}/{n_true['Pt']} | "
                         f"{light} {hit[light]}/{n_true[light]} | {fp} | {decoys} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=6, help="512² frames per row (seeds 1…)")
    ap.add_argument("--rows", default="all", help="'all' or comma-separated row numbers 0…5 of ROWS")
    ap.add_argument("--ae-frames", type=int, default=2,
                    help="frames per row the autoencoder baseline is trained and scored on")
    ap.add_argument("--no-ae", action="store_true", help="skip the autoencoder baseline")
    ap.add_argument("--study", choices=("accuracy", "intensity", "detection"), default="accuracy")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--table-from", type=Path, default=None, help="print the table of a saved --json file")
    ap.add_argument("--max-rel-width", type=float, default=None,
                    help="assign_species max_rel_width at true positions (default: the library's)")
    args = ap.parse_args(argv)
    if args.table_from:
        print(table(json.loads(args.table_from.read_text())))
        return 0
    if args.frames < 1:
        ap.error(f"--frames must be ≥ 1, got {args.frames}")
    if args.study == "intensity":
        print(intensity_study(args.frames))
        return 0
    if args.study == "detection":
        print(detection_study(args.frames))
        return 0
    wanted = ROWS if args.rows == "all" else [ROWS[int(i)] for i in args.rows.split(",")]
    species_kw = {} if args.max_rel_width is None else {"max_rel_width": args.max_rel_width}
    rows = run(args.frames, wanted, ae=not args.no_ae, ae_frames=args.ae_frames, species_kw=species_kw)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
