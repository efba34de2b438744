"""Helpers shared by sub-commands: option types, checks made before any work
starts, expanding inputs, output folders, reporting bad files in one line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

#: The exit statuses of every sub-command (documented in README and docs/cli.md).
EXIT_OK = 0            # everything asked for was done
EXIT_INTERNAL = 1      # a bug in fastsac (a traceback is printed; please report it)
EXIT_BAD_INPUT = 2     # an input was skipped, or an option/environment problem stopped the run
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT (outputs finished so far are complete)

#: The output folder's record of what one run wrote (see :func:`prepare_output_dir`).
MANIFEST = "manifest.json"


# --------------------------------------------------------------------------- option types
def _number(text: str, *, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = _number(text, name="value")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text!r}")
    return v


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number ≥ 0."""
    v = _number(text, name="value")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be finite and ≥ 0, got {text!r}")
    return v


def finite_float(text: str) -> float:
    """argparse type: any finite number (detector thresholds may be ≤ 0)."""
    return _number(text, name="value")


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _int_at_least(text, 0)


def pixel_size(text: str) -> float:
    """argparse type: a pixel size in nm within ``fastsac.io.PIXEL_SIZE_RANGE_NM``."""
    from ..io import check_pixel_size

    v = _number(text, name="pixel size")
    try:
        return check_pixel_size(v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: stores into the new one's ``dest``
    and says once on stderr which name to use."""

    def __init__(self, option_strings, dest, new_name: str = "", **kw):
        self.new_name = new_name
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"fastsac: {option_string} is deprecated; use {self.new_name}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(p, old: str, new: str, *, dest: str, type=None, nargs=None) -> None:
    """Accept ``old`` as a hidden spelling of ``new`` (not shown in --help)."""
    kw = {} if nargs is None else {"nargs": nargs}
    p.add_argument(old, dest=dest, type=type, action=_DeprecatedAlias, new_name=new,
                   help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


def add_multimer_cutoff(p, *, default: float | None = 0.23) -> None:
    """``--multimer-cutoff-nm`` (and the deprecated ``--multimer-cutoff``)."""
    shown = "summary.json or 0.23" if default is None else "%(default)s"
    p.add_argument("--multimer-cutoff-nm", dest="multimer_cutoff_nm", type=positive_float,
                   default=default, metavar="NM",
                   help=f"NN distance below which an atom is in a multimer (default: {shown} nm)")
    add_deprecated_alias(p, "--multimer-cutoff", "--multimer-cutoff-nm",
                         dest="multimer_cutoff_nm", type=positive_float)


def add_elements(p) -> None:
    """``--elements`` of ``fastsac analyze`` and ``fastsac montage``."""
    p.add_argument("--elements", nargs="+", default=None, metavar="SYMBOL",
                   help="elements present, e.g. --elements Pt Pd: species per atom from the "
                        "Z^1.7 intensity contrast (default: intensity classes found in the data)")


def elements_problem(elements) -> str | None:
    """One line for a bad ``--elements`` (unknown symbol, one named twice), else None;
    checked before any image is read."""
    if not elements:
        return None
    from ..species import check_elements  # the API's own check, so both say the same

    try:
        check_elements(elements)
    except (TypeError, ValueError) as exc:
        return f"--elements: {exc}"
    return None


def add_detector_args(p, *, backend: bool = True) -> None:
    p.add_argument("--detector", default="default",
                   help="default | classical | heatmap | rescore | PATH to a checkpoint or re-scorer .json (default: %(default)s = the best cross-validated detector, today classical)")
    p.add_argument("--threshold", type=positive_float, default=None,
                   help="detector score threshold, finite and > 0 (detector's own default if "
                        "omitted)")
    if backend:
        p.add_argument("--backend", default="auto", choices=["auto", "cpp", "cuda", "numpy"],
                       help="kernel backend for neighbours and clusters: auto (C++ when built), "
                            "cpp, cuda (numba CUDA, needs a GPU) or numpy (the references) "
                            "(default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the default/classical detector runs: its score map as torch "
                        "convolutions and the peak kernels on a GPU (auto: when torch sees one), "
                        "or the C++ kernels on the CPU (default: %(default)s)")


# --------------------------------------------------------------------------- environment
def environment_problem(args) -> str | None:
    """The first option that cannot work on this machine (one line), or None.
    Checked before any input is read or any output written."""
    if getattr(args, "backend", None) == "cuda":
        from .._backend import Backend, unavailable_reason

        why = unavailable_reason(Backend.CUDA)
        if why:
            return f"--backend cuda: {why}; use --backend auto"
    if getattr(args, "device", None) == "cuda":
        why = cuda_unavailable()
        if why:
            return f"--device cuda: {why}; use --device auto or cpu"
    return None


def cuda_unavailable() -> str | None:
    """None if torch sees a CUDA device, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    try:
        if torch.cuda.is_available():
            return None
    except Exception as exc:  # driver problems surface here
        return f"CUDA unusable ({exc})"
    return "torch sees no CUDA device"


def fail(message: str) -> int:
    """Print one ``fastsac: …`` line on stderr and return :data:`EXIT_BAD_INPUT`."""
    print(f"fastsac: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# --------------------------------------------------------------------------- inputs
def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; directories expanded to the supported images inside (sorted)."""
    from ..io import SUPPORTED_SUFFIXES

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES)
            # A folder without images stays, to be reported as a skipped input.
            out += found or [p]
        else:
            out.append(p)
    return out


def output_names(files: list[Path]) -> list[str]:
    """A distinct output-folder name per input: the file stem, qualified by its
    parent folders when stems collide (``a/frame.tif``, ``b/frame.tif`` →
    ``a_frame``, ``b_frame``), numbered as a last resort. Names are compared
    case-insensitively (output folders may live on such file systems)."""
    names = [f.stem for f in files]
    depth = 0
    while True:
        seen: dict[str, int] = {}
        for n in names:
            seen[n.lower()] = seen.get(n.lower(), 0) + 1
        clash = [i for i, n in enumerate(names) if seen[n.lower()] > 1]
        if not clash:
            return names
        depth += 1
        progressed = False
        for i in clash:
            parents = Path(os.path.abspath(files[i])).parent.parts[-depth:]
            q = "_".join([*(p.strip("/\\") or "root" for p in parents), files[i].stem])
            if files[i].suffix and depth > 3:
                q += "_" + files[i].suffix.lstrip(".")
            progressed |= q != names[i]
            names[i] = q
        if not progressed or depth > 8:
            break
    count: dict[str, int] = {}
    out = []
    for n in names:
        k = count.get(n.lower(), 0)
        count[n.lower()] = k + 1
        out.append(n if k == 0 else f"{n}_{k + 1}")
    return out


def report_bad(path, exc: BaseException | str) -> None:
    """One line per bad input on stderr (no traceback)."""
    msg = exc if isinstance(exc, str) else describe_error(exc)
    if path is not None and str(path) not in msg:
        msg = f"{path}: {msg}"
    print(f"fastsac: skipped {msg}", file=sys.stderr)


def describe_error(exc: BaseException) -> str:
    """An exception as one line: its message for input errors, with its type otherwise."""
    from ..errors import FastsacInputError

    text = " ".join(str(exc).split())
    if isinstance(exc, FastsacInputError):
        return text
    if isinstance(exc, MemoryError):
        return "out of memory while analysing it"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"cannot write output: {exc.strerror}{where}"
    if len(text) > 300:
        text = text[:299] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- outputs
def check_writable_dir(out: Path, *, what: str = "output directory") -> str | None:
    """Create ``out`` if needed and check a file can be written in it; the
    reason it cannot, or None. Nothing is left behind."""
    import tempfile

    if out.exists() and not out.is_dir():
        return f"{what} {out} exists and is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fastsac-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{what} {out} is not writable ({exc.strerror or exc})"
    return None


def prepare_output_dir(out: Path, *, overwrite: bool) -> str | None:
    """Make ``out`` ready for a new run, before any analysis: creatable and
    writable; refused if it holds an earlier run (its ``manifest.json`` or
    ``summary.csv``) unless ``overwrite``, which removes what that run's
    manifest lists; hidden temporaries of killed runs removed. Returns the
    reason it cannot be used, or None."""
    import json
    import shutil

    from ..io import remove_stale_temporaries

    why = check_writable_dir(out)
    if why:
        return why
    manifest = out / MANIFEST
    earlier = manifest.exists() or (out / "summary.csv").exists()
    if earlier and not overwrite:
        return (f"output directory {out} holds the results of an earlier run; pass --overwrite "
                "to replace them, or choose another -o")
    remove_stale_temporaries(out)
    if earlier:
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8")).get("outputs", [])
        except (OSError, ValueError, AttributeError):
            listed = []
        root = out.resolve()
        for name in [*listed, "summary.csv", "report.html", "report.json", MANIFEST]:
            p = (out / str(name))
            try:  # only entries inside out, never a path a manifest smuggles outside
                if p.resolve().parent != root:
                    continue
            except OSError:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink(missing_ok=True)
    return None


def write_manifest(out: Path, *, command: str, argv: list[str] | None, entries: list[dict],
                   outputs: list[str]) -> None:
    """``OUT/manifest.json``: what this run read and wrote (used by ``--overwrite``
    to remove exactly the earlier run's outputs)."""
    from .. import __version__
    from ..io import write_json

    write_json(out / MANIFEST, {"fastsac_version": __version__, "command": command,
                                "argv": argv, "inputs": entries,
                                "outputs": sorted(set(outputs))})


# --------------------------------------------------------------------------- detectors
def detector_from_args(args):
    """The detector the arguments ask for, or None after a one-line error message."""
    from ..detectors import get_detector
    from ..errors import FastsacInputError

    params = {} if args.threshold is None else {"threshold": args.threshold}
    device = getattr(args, "device", "cpu")
    if device == "cuda":
        why = cuda_unavailable()
        if why:
            print(f"fastsac: --device cuda: {why}; use --device auto or cpu", file=sys.stderr)
            return None
    if args.detector in ("default", "classical") and device != "cpu":
        params["device"] = device
    try:
        return get_detector(args.detector, **params)
    except (FastsacInputError, ValueError, TypeError, OSError, RuntimeError) as exc:
        report_bad(None, exc)
        return None
