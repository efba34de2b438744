"""Helpers shared by sub-commands: expanding inputs, reporting bad files."""

from __future__ import annotations

import sys
from pathlib import Path


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; directories expanded to the supported images inside (sorted)."""
    from ..io import SUPPORTED_SUFFIXES

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            out.append(p)
    return out


def report_bad(path, exc: BaseException) -> None:
    """One line per bad input on stderr (no traceback)."""
    msg = str(exc)
    if path is not None and str(path) not in msg:
        msg = f"{path}: {msg}"
    print(f"fastsac: skipped {msg}", file=sys.stderr)


def add_detector_args(p) -> None:
    p.add_argument("--detector", default="default",
                   help="default | classical | heatmap | rescore | PATH to a checkpoint or re-scorer .json (default: %(default)s = the best cross-validated detector, today classical)")
    p.add_argument("--threshold", type=float, default=None,
                   help="detector score threshold (detector's own default if omitted)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpp", "cuda", "numpy"],
                   help="kernel backend (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the default/classical detector runs: its score map as torch "
                        "convolutions and the peak kernels on a GPU (auto: when torch sees one), "
                        "or the C++ kernels on the CPU (default: %(default)s)")


def detector_from_args(args):
    """The detector the arguments ask for, or None after a one-line error message."""
    from ..detectors import get_detector
    from ..errors import FastsacInputError

    params = {} if args.threshold is None else {"threshold": args.threshold}
    device = getattr(args, "device", "cpu")
    if device == "cuda":
        from .._backend import resolve_device

        try:
            resolve_device("cuda")
        except (RuntimeError, ValueError) as exc:
            print(f"fastsac: --device cuda: {exc}", file=sys.stderr)
            return None
    if args.detector in ("default", "classical") and device != "cpu":
        params["device"] = device
    try:
        return get_detector(args.detector, **params)
    except (FastsacInputError, ValueError) as exc:
        report_bad(None, exc)
        return None
