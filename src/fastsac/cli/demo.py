"""``fastsac demo``: analyse the built-in simulated frame and score it against its truth."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("demo", help="analyse a built-in simulated image (writes ./fastsac-demo/)")
    p.add_argument("-o", "--out", default="fastsac-demo", help="output directory (default: %(default)s)")
    p.add_argument("--detector", default="default", help="classical | default | PATH")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated frame (default 0)")
    return p


def run(args) -> int:
    from pathlib import Path

    from ..evaluate import match_points
    from ..io import write_tiff
    from ..pipeline import analyze, summary_row, write_result, write_summary_csv
    from ..synth import demo_image

    out = Path(args.out)
    micrograph, truth = demo_image(seed=args.seed)
    write_tiff(out / "demo.tif", micrograph.data, pixel_size_nm=micrograph.pixel_size_nm)
    res = analyze(micrograph, detector=args.detector)
    write_result(res, out / micrograph.name)
    write_summary_csv(out / "summary.csv", [summary_row(res.summary)])
    score = match_points(res.detections.xy, truth.xy, tolerance_px=0.18 / micrograph.pixel_size_nm)
    s = res.summary
    u = s["length_unit"]
    print(f"fastsac demo: simulated {micrograph.shape[1]}×{micrograph.shape[0]} px frame, "
          f"{micrograph.pixel_size_nm:.4f} nm/px, {len(truth.xy)} true atoms")
    print(f"  detector {s['detector']['name']}: {s['n_atoms']} atoms, "
          f"precision {score.precision:.3f}, recall {score.recall:.3f}, F1 {score.f1:.3f} vs truth")
    print(f"  support {s['support_area_nm2']:.1f} nm² ({s['vacuum_fraction']:.0%} vacuum), "
          f"density {s['density_per_nm2']:.3f} atoms/nm² of support")
    print(f"  mean NN {s[f'nn_mean_{u}']:.3f} {u} (random expectation "
          f"{s[f'expected_nn_random_{u}']:.3f} {u}), Clark–Evans R {s['clark_evans_R']:.2f} "
          f"(p = {s['clark_evans_p_value']:.2g})")
    print(f"  multimer share {s['multimer_fraction']:.1%} (NN < {s['multimer_cutoff_nm']} nm); "
          f"monomers {s['n_monomers']}, dimers {s['n_dimers']}, trimers {s['n_trimers']}, "
          f"≥4: {s['n_clusters_4plus']}")
    print(f"  wrote {out}/{micrograph.name}/atoms.csv, summary.json, overlay.png and {out}/summary.csv")
    return 0
