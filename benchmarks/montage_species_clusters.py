"""Cost of species and the cluster table on montages (docs/montage.md, "Species and clusters").

Three measurements, each in seconds and peak memory (``tracemalloc``: numpy
allocations of that step only), printed as one JSON object::

    PYTHONPATH=src python benchmarks/montage_species_clusters.py \
        --atoms 1000000 --montage 2048 --out benchmarks/results/montage_species_clusters.json

1. ``table``: clusters.csv for ``--atoms`` synthetic positions (uniform at the
   density of a typical montage, 1 atom per 1000 px², plus 5 % close pairs and
   a few tight groups): single-linkage clusters, then
   :func:`fastsac.spatial.clusters_table.cluster_table` with species labels,
   its composition, the size distribution and the CSV text.
2. ``species_mixture``: :func:`fastsac.species.assign_species` on ``--atoms``
   synthetic intensities (two classes 2.45× apart, with errors), with and
   without ``elements``: the global step that cannot be tiled. The mixture is
   fitted on at most ``MAX_FIT_ATOMS`` atoms; ``--full-fit`` fits all of them
   (the cost before the cap); ``--mixture-only`` runs this step alone::

       PYTHONPATH=src python benchmarks/montage_species_clusters.py --atoms 1000000 --mixture-only \
           --out benchmarks/results/montage_species_mixture_1e6.json
3. ``montage``: ``analyze_montage`` of a ``--montage``² test montage with
   species on and off: detection time, the photometry pass
   (:func:`fastsac.montage.montage_species`) and the whole species + cluster
   stage, so the cost can be read against detection.
4. ``file``: with ``--file PATH`` (e.g. an 8192² BigTIFF from
   ``fastsac.synth.write_montage``), ``analyze_montage`` of that file with the
   support mask and species on: its ``timings_s`` (detection passes, mask,
   statistics, ``species_clusters`` = photometry pass reading the file +
   mixture + cluster table)::

       python -c "from fastsac.synth import write_montage; write_montage('/tmp/m8k.tif', size=8192)"
       PYTHONPATH=src python benchmarks/montage_species_clusters.py --atoms 1000 --skip-mixture \
           --file /tmp/m8k.tif --out benchmarks/results/montage_species_file8k.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def measured(fn, *, memory: bool = True):
    """(result, seconds, peak MiB of allocations made during ``fn``). The time
    comes from an untraced run (tracemalloc slows Python loops several-fold);
    with ``memory`` a second, traced run gives the peak."""
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    if not memory:
        return out, dt, None
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, dt, round(peak, 1)


def synthetic_positions(n: int, rng) -> np.ndarray:
    side = float(np.sqrt(n * 1000.0))  # 1 atom per 1000 px² (~1.2 per nm² at 0.0293 nm/px)
    n_pairs, n_groups = n // 20, n // 2000
    xy = rng.uniform(0, side, (n - 2 * n_pairs - 6 * n_groups, 2))
    base = rng.uniform(0, side, (n_pairs, 2))
    ang = rng.uniform(0, 2 * np.pi, n_pairs)
    pairs = base + 6.5 * np.stack([np.cos(ang), np.sin(ang)], 1)
    groups = (rng.uniform(0, side, (n_groups, 1, 2)) + rng.normal(0, 3.0, (n_groups, 6, 2))).reshape(-1, 2)
    return np.concatenate([xy, base, pairs, groups])


def bench_table(n: int, seed: int) -> dict:
    from fastsac.result import write_clusters_csv
    from fastsac.spatial import clusters
    from fastsac.spatial.clusters_table import cluster_table

    rng = np.random.default_rng(seed)
    xy = synthetic_positions(n, rng)
    species = rng.choice(np.array(["Pt", "Pd"], dtype=object), len(xy), p=[0.7, 0.3])
    cl, t_cl, m_cl = measured(lambda: clusters(xy, cutoff=0.23 / 0.0293))
    table, t_tab, m_tab = measured(lambda: cluster_table(xy, cl.labels, pixel_size_nm=0.0293,
                                                         species=species))
    comp, t_comp, m_comp = measured(table.composition)
    dist, t_dist, _ = measured(table.size_distribution, memory=False)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _, t_csv, m_csv = measured(lambda: write_clusters_csv(Path(tmp) / "clusters.csv", table))
    return {"n_atoms": len(xy), "n_clusters": len(table), "n_multi_atom": int((table.n_atoms >= 2).sum()),
            "largest_cluster": int(table.n_atoms.max()),
            "clusters_s": round(t_cl, 3), "cluster_table_s": round(t_tab, 3),
            "composition_s": round(t_comp, 3), "size_distribution_s": round(t_dist, 3),
            "clusters_csv_s": round(t_csv, 3),
            "peak_mib": {"clusters": m_cl, "cluster_table": m_tab, "composition": m_comp,
                         "clusters_csv": m_csv}}


def bench_mixture(n: int, seed: int, *, full_fit: bool = False) -> dict:
    """``assign_species`` on ``n`` synthetic intensities, fitted on at most
    ``MAX_FIT_ATOMS`` of them (default) or on all (``full_fit``: the cost
    before the cap). Accuracy against the simulated species; without
    elements two classes are scored dimmer = Pd, brighter = Pt."""
    from fastsac.species import MAX_FIT_ATOMS, assign_species

    rng = np.random.default_rng(seed)
    n_pt = int(0.7 * n)
    inten = np.concatenate([rng.normal(2450.0, 250.0, n_pt), rng.normal(1000.0, 120.0, n - n_pt)])
    err = np.full(n, 60.0)
    truth = np.array([1] * n_pt + [0] * (n - n_pt))
    cap = None if full_fit else MAX_FIT_ATOMS
    out = {"n_atoms": n, "max_fit_atoms": cap}
    for name, els in (("elements_Pt_Pd", ["Pt", "Pd"]), ("intensity_classes", None)):
        tracemalloc.start()  # one traced run: numpy-bound, tracing costs little here
        t0 = time.perf_counter()
        r = assign_species(inten, intensity_err=err, elements=els, max_fit_atoms=cap)
        t = time.perf_counter() - t0
        m = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        scored = r.status == "ok" and r.n_classes == 2
        out[name] = {"s": round(t, 2), "peak_mib": round(m, 1), "status": r.status, "names": r.names,
                     "accuracy": float(np.mean(r.labels == truth)) if scored else None,
                     "class_means": [round(float(v), 2) for v in r.means]}
    return out


def bench_montage(size: int, seed: int) -> dict:
    from fastsac_testdata import spots

    from fastsac.montage import analyze_montage, montage_species

    n = int(600 * (size / 1024) ** 2)
    img, _ = spots((size, size), n=n, pairs=n // 10, seed=seed)
    img = img.astype(np.float32)
    kw = dict(detector="classical", tile=512, pixel_size_nm=0.0293, progress=False, support_mask=False)
    off, t_off, _ = measured(lambda: analyze_montage(img, species=False, **kw), memory=False)
    on, t_on, _ = measured(lambda: analyze_montage(img, **kw), memory=False)
    _, t_ph, m_ph = measured(lambda: montage_species(img, on.detections.xy, pixel_size_nm=0.0293,
                                                     tile=512, progress=False))
    return {"shape": [size, size], "n_atoms": len(on.detections), "species_status": on.statistics["species"]["status"],
            "analyze_montage_species_off_s": round(t_off, 2), "analyze_montage_species_on_s": round(t_on, 2),
            "detect_s": round(on.timings["total"], 2),
            "species_clusters_s": round(on.timings["species_clusters"], 2),
            "montage_species_s": round(t_ph, 2), "montage_species_peak_mib": m_ph}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=1_000_000)
    ap.add_argument("--montage", type=int, default=2048, help="edge of the test montage in px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-mixture", action="store_true")
    ap.add_argument("--mixture-only", action="store_true", help="only the species mixture step")
    ap.add_argument("--full-fit", action="store_true",
                    help="fit the mixture on every atom (max_fit_atoms=None: the cost before the cap)")
    ap.add_argument("--file", default=None, help="also analyse this montage file (step 4)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    res = {"command": "PYTHONPATH=src python benchmarks/montage_species_clusters.py " + " ".join(argv or sys.argv[1:])}
    if not a.mixture_only:
        res["table"] = bench_table(a.atoms, a.seed)
        print(json.dumps(res["table"]), flush=True)
    if not a.skip_mixture:
        res["species_mixture"] = bench_mixture(a.atoms, a.seed, full_fit=a.full_fit)
        print(json.dumps(res["species_mixture"]), flush=True)
    if not a.mixture_only:
        res["montage"] = bench_montage(a.montage, a.seed)
    if a.file:
        from fastsac.montage import analyze_montage

        t0 = time.perf_counter()
        r = analyze_montage(a.file, tile=2048, progress=False)
        res["file"] = {"path": a.file, "shape": list(r.shape), "n_atoms": len(r.detections),
                       "wall_s": round(time.perf_counter() - t0, 1),
                       "species": {k: r.statistics["species"][k] for k in ("status", "names", "counts")},
                       "n_clusters": len(r.cluster_table),
                       "timings_s": {k: round(v, 2) for k, v in r.timings.items()}}
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
