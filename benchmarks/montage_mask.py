"""Time and peak memory of the montage support mask (read + bin + mask) on a
montage file, e.g. the 32768² BigTIFF of ``benchmarks/synth_montage.py``::

    PYTHONPATH=src python benchmarks/synth_montage.py --size 32768 --out /tmp/m --keep
    PYTHONPATH=src python benchmarks/montage_mask.py /tmp/m/montage.tif [--max-binned-px N]

Run it in a fresh process: ``ru_maxrss`` is the process-wide peak. Prints one
JSON object (bin factor, binned shape, stage times, vacuum fraction, peak RSS).
``--e2e`` runs detection, mask and statistics (Donnelly and Monte Carlo) stage
by stage and reports VmRSS and the per-stage peak VmHWM after each.
The whole analysis with the mask is ``fastsac montage`` (docs/montage.md)::

    /usr/bin/time -v fastsac montage /tmp/m/montage.tif -o out --tile 2048 --scratch /tmp/m
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


class _Times(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.msgs = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("montage")
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--max-binned-px", type=int, default=None)
    ap.add_argument("--bin-factor", type=int, default=None)
    ap.add_argument("--pixel-size", type=float, default=None)
    ap.add_argument("--e2e", action="store_true",
                    help="detection + mask + statistics, as analyze_montage, with the resident "
                         "and peak memory after each stage")
    ap.add_argument("--scratch", default=None)
    a = ap.parse_args(argv)
    if a.e2e:
        return e2e(a)
    from fastsac.montage import MAX_BINNED_PX, montage_support_mask, open_montage

    h = _Times()
    logging.getLogger("fastsac.montage").addHandler(h)
    logging.getLogger("fastsac.montage").setLevel(logging.INFO)
    src = open_montage(a.montage, pixel_size_nm=a.pixel_size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    m, f = montage_support_mask(src, tile=a.tile, bin_factor=a.bin_factor,
                                max_binned_px=a.max_binned_px or MAX_BINNED_PX, progress=False)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"montage": a.montage, "shape": list(src.shape), "bin_factor": f,
                      "binned_shape": list(m.mask.shape), "mask_s": dt, "log": h.msgs,
                      "vacuum_fraction": m.vacuum_fraction, "has_vacuum": m.has_vacuum,
                      "support_area_nm2": m.support_area_nm2, "peak_rss_mb": rss,
                      "rss_before_mb": rss0}, indent=1))
    return 0


def _mem() -> dict:
    """Resident and peak resident MB of this process (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024
    return out


def _reset_peak() -> bool:
    try:  # Linux ≥ 4.0: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def e2e(a) -> int:
    """The stages of ``analyze_montage`` one by one, with memory after each."""
    from fastsac.montage import (MAX_BINNED_PX, detect_montage, montage_statistics,
                                 montage_support_mask, open_montage)

    src = open_montage(a.montage, pixel_size_nm=a.pixel_size)
    rep = {"montage": a.montage, "shape": list(src.shape), "start": _mem()}
    t0 = time.perf_counter()
    dets, owner, ncand, info = detect_montage(src, tile=a.tile, scratch_dir=a.scratch,
                                              progress=False)
    t1 = time.perf_counter()
    rep["detect"] = {"s": t1 - t0, "n_atoms": len(dets), **_mem()}
    _reset_peak()
    m, f = montage_support_mask(src, tile=a.tile, bin_factor=a.bin_factor,
                                max_binned_px=a.max_binned_px or MAX_BINNED_PX, progress=False)
    t2 = time.perf_counter()
    rep["support_mask"] = {"s": t2 - t1, "bin_factor": f, "binned_shape": list(m.mask.shape),
                           "vacuum_fraction": m.vacuum_fraction, **_mem()}
    _reset_peak()
    for corr in ("donnelly", "monte_carlo"):
        ts = time.perf_counter()
        _, _, _, summ = montage_statistics(dets.xy, shape=src.shape, pixel_size_nm=src.pixel_size_nm,
                                           mask=m, mask_bin_factor=f,
                                           stats_params={"mask_correction": corr})
        rep[f"statistics_{corr}"] = {"s": time.perf_counter() - ts,
                                     "n_atoms_in_support": summ["n_atoms_in_support"],
                                     "density_per_nm2": summ["density_per_nm2"],
                                     "clark_evans_R": summ["clark_evans_R"], **_mem()}
    rep["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
