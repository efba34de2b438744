"""Live analysis during acquisition: per-frame detection with running statistics.

:class:`LiveSession` analyses frames one at a time (arrays or micrographs) and
keeps pooled statistics — the NN-distance distribution, the multimer share and
the density over every frame so far — equal to the statistics of the pooled
per-frame results. :func:`watch` polls a folder the microscope writes into and
feeds each *complete* new frame to a session, keeping a running atoms table,
``stats.json``, an overlay of the latest frame and a small self-refreshing
HTML dashboard up to date.

A file is complete when either the writer used the ``.tmp``/``.part`` →
rename convention (such names and dot-files are never read; a frame seen under
its temporary name is taken at the first poll after the rename), or its size
and mtime have not changed for ``settle_s`` seconds (and at least across two
polls) *and* it reads cleanly. A stable file that does not read is reported
once and retried whenever it changes again (a writer that paused mid-file), so
it is never abandoned; a file that changes after it was analysed is analysed
again: a new row, whose ``supersedes`` column names the frame it replaces
(the running statistics drop the replaced frame).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import DEFAULT_PIXEL_SIZE_NM
from .detectors import Detections, get_detector
from .html_page import fmt, img_tag, page, table
from .io import Micrograph, atomic_write_text, write_json

__all__ = ["LiveSession", "FrameResult", "watch", "WatchReport", "FrameWatcher",
           "NN_BINS_NM"]

log = logging.getLogger(__name__)

#: Bin edges of the running NN-distance histogram, nm (0–2 nm in 0.025 nm steps).
NN_BINS_NM = np.round(np.arange(0.0, 2.0 + 1e-9, 0.025), 6)
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".lock")


@dataclass(frozen=True)
class FrameResult:
    """One analysed frame.

    Attributes
    ----------
    index : int
        Frame number in the session (0-based).
    name : str
    detections : Detections
    nn_dist : (N,) float64
        NN distance of each atom within the frame (nm when calibrated, else px).
    cluster_size : (N,) int64
    stats : dict
        Per-frame summary (n_atoms, density, NN stats, multimer share…; the
        ``summary.json`` of ``fastsac analyze``).
    latency_s : float
        Seconds from the call to the finished result (end to end).
    timings : dict
        Seconds per stage (score_map, peaks, refine, spatial, …).
    micrograph : Micrograph
        The frame that was analysed.
    """

    index: int
    name: str
    detections: Detections
    nn_dist: np.ndarray
    cluster_size: np.ndarray
    stats: dict
    latency_s: float
    timings: dict = field(default_factory=dict)
    micrograph: Micrograph | None = field(default=None, repr=False)


class LiveSession:
    """Analyse frames as they arrive and keep pooled statistics.

    Parameters
    ----------
    detector : str or Detector
        As :func:`fastsac.detectors.get_detector`; resolved once.
    pixel_size_nm : float, optional
        Calibration applied to frames without their own (and overriding
        nothing that the frame carries unless ``override=True``).
    multimer_cutoff_nm : float
        NN distance below which an atom counts as part of a multimer.
    support_mask : bool
        Find vacuum per frame (as ``fastsac analyze``); densities are per
        support area.
    device : {"cpu", "auto", "cuda"}
        Where the default/classical detector runs (see
        :class:`~fastsac.detectors.ClassicalDetector`); on a GPU the support
        mask is computed on the CPU meanwhile.
    mask_params : dict, optional
        Passed to :func:`~fastsac.support.support_mask` (e.g. a coarser
        ``working_px`` for faster frames).
    stats_params : dict, optional
        Passed to :func:`~fastsac.spatial.stats.dispersion`. Default: the
        per-frame Clark–Evans test on a masked frame uses Donnelly's
        area/perimeter correction instead of 199 Monte-Carlo patterns (0.1–0.2 s
        per frame); the running statistics do not depend on it.

    Examples
    --------
    >>> s = LiveSession(detector="classical", pixel_size_nm=0.0293)   # doctest: +SKIP
    >>> r = s.process(frame)                                         # doctest: +SKIP
    >>> r.latency_s, s.stats()["multimer_fraction"]                     # doctest: +SKIP
    """

    def __init__(self, *, detector="default", pixel_size_nm: float | None = None,
                 multimer_cutoff_nm: float = 0.23, override: bool = False,
                 support_mask: bool = True, device: str = "cpu", mask_params: dict | None = None,
                 stats_params: dict | None = None):
        params = {"device": device} if (device != "cpu" and isinstance(detector, str)
                                         and detector in ("default", "classical")) else {}
        self.detector = get_detector(detector, **params)
        self.mask_params = dict(mask_params or {})
        self.stats_params = {"mask_correction": "donnelly"} if stats_params is None else dict(stats_params)
        self.support_mask = bool(support_mask)
        self.pixel_size_nm = None if pixel_size_nm is None else float(pixel_size_nm)
        self.multimer_cutoff_nm = float(multimer_cutoff_nm)
        self.override = bool(override)
        self.frames: list[dict] = []
        self.latencies: list[float] = []
        # Running NN statistics, updated per frame in O(new atoms) (a session
        # runs for thousands of frames): sorted values for the exact median,
        # Chan's merge of (count, mean, M2) for the mean and std, and the counts.
        self._nn_sorted = np.zeros(0)
        self._nn_n, self._nn_mean, self._nn_m2 = 0, 0.0, 0.0
        self._nn_counts = np.zeros(len(NN_BINS_NM) - 1, np.int64)
        self._frame_nn: dict[int, np.ndarray] = {}  # per frame, for retract()
        self.superseded: set[int] = set()  # frames replaced by a newer version (retract)

    def process(self, frame, *, name: str | None = None) -> FrameResult:
        """Analyse one frame ((H, W) array, :class:`~fastsac.io.Micrograph` or path)."""
        from .io import read
        from .pipeline import analyze

        t0 = time.perf_counter()
        if isinstance(frame, (str, os.PathLike)):
            m = read(frame, pixel_size_nm=self.pixel_size_nm if self.override else None)
        elif isinstance(frame, Micrograph):
            m = frame
        else:
            m = Micrograph.from_array(frame, name=name)
        if m.pixel_size_nm is None and self.pixel_size_nm is not None:
            m = Micrograph(m.data, self.pixel_size_nm, "override", m.source, m.metadata)
        res = analyze(m, detector=self.detector, multimer_cutoff_nm=self.multimer_cutoff_nm,
                      support_mask=self.support_mask, mask_params=self.mask_params,
                      stats_params=self.stats_params, pair_correlation=False,
                      species=False)
        latency = time.perf_counter() - t0
        s = res.summary
        idx = len(self.frames)
        calibrated = bool(s.get("pixel_size_nm"))
        # Uncalibrated frames are converted at the default pixel size (stated in stats()).
        px = s["pixel_size_nm"] if calibrated else (self.pixel_size_nm or DEFAULT_PIXEL_SIZE_NM)
        nn_px = res.nn_dist / px if calibrated else res.nn_dist
        nn_nm = nn_px[np.isfinite(nn_px)] * px
        support_nm2 = float(s["support_area_px2"]) * px * px
        self._add_nn(nn_nm)
        self._frame_nn[idx] = np.sort(nn_nm)
        self.latencies.append(latency)
        row = {"frame": idx, "name": name or m.name, "n_atoms": int(s["n_atoms"]),
               "n_atoms_in_support": int(s["n_atoms_in_support"]),
               "multimer_atoms": int(s["n_atoms_multimer"]), "support_area_nm2": support_nm2,
               "density_per_nm2": s["n_atoms_in_support"] / support_nm2 if support_nm2 else None,
               "nn_mean_nm": float(nn_nm.mean()) if len(nn_nm) else None,
               "multimer_fraction": s["multimer_fraction"], "latency_s": latency,
               "calibrated": calibrated, "supersedes": None}
        self.frames.append(row)
        return FrameResult(idx, row["name"], res.detections, res.nn_dist, res.cluster_size, s,
                           latency, dict(s.get("timings_s", {})) | {"total": latency},
                           res.micrograph)

    def warm_up(self, size: int = 256) -> float:
        """Analyse a small simulated frame and forget it, so that lazy imports, JIT
        compilation and (on a GPU) the CUDA context and FFT plans are paid now
        rather than by the first real frame (about 1 s on a CPU). Returns the
        seconds spent; the session's frames and statistics are unchanged."""
        from .pipeline import analyze
        from .synth import simulate

        t0 = time.perf_counter()
        frame, _ = simulate(size=int(size), seed=0)
        analyze(Micrograph.from_array(frame, pixel_size_nm=self.pixel_size_nm or DEFAULT_PIXEL_SIZE_NM),
                detector=self.detector, multimer_cutoff_nm=self.multimer_cutoff_nm,
                support_mask=self.support_mask, mask_params=self.mask_params,
                stats_params=self.stats_params, pair_correlation=False,
                      species=False)
        return time.perf_counter() - t0

    def _add_nn(self, nn_nm: np.ndarray) -> None:
        k = len(nn_nm)
        if k == 0:
            return
        new = np.sort(nn_nm)
        self._nn_sorted = np.insert(self._nn_sorted, np.searchsorted(self._nn_sorted, new), new)
        mean_k = float(new.mean())
        m2_k = float(((new - mean_k) ** 2).sum())
        n = self._nn_n + k
        delta = mean_k - self._nn_mean
        self._nn_mean += delta * k / n
        self._nn_m2 += m2_k + delta * delta * self._nn_n * k / n
        self._nn_n = n
        self._nn_counts += np.histogram(np.minimum(new, NN_BINS_NM[-1] - 1e-12), bins=NN_BINS_NM)[0]

    def retract(self, index: int) -> None:
        """Drop frame ``index`` from the running statistics (a newer version of
        the same file replaces it); its row stays, listed in :attr:`superseded`."""
        if index in self.superseded:
            return
        self.superseded.add(index)
        old = self._frame_nn.pop(index, np.zeros(0))
        k = len(old)
        if k == 0:
            return
        pos = np.searchsorted(self._nn_sorted, old)
        # Equal values: delete one occurrence per removed value.
        pos = pos + (np.arange(k) - np.searchsorted(old, old))
        self._nn_sorted = np.delete(self._nn_sorted, pos)
        n = self._nn_n - k
        if n == 0:
            self._nn_n, self._nn_mean, self._nn_m2 = 0, 0.0, 0.0
        else:  # Chan's merge run backwards
            mean_k = float(old.mean())
            mean = (self._nn_n * self._nn_mean - k * mean_k) / n
            delta = mean_k - mean
            self._nn_m2 = max(self._nn_m2 - float(((old - mean_k) ** 2).sum())
                              - delta * delta * n * k / self._nn_n, 0.0)
            self._nn_n, self._nn_mean = n, mean
        self._nn_counts -= np.histogram(np.minimum(old, NN_BINS_NM[-1] - 1e-12), bins=NN_BINS_NM)[0]

    def stats(self) -> dict:
        """Running statistics over all frames so far (pooled, nm).

        ``nn_hist`` counts pooled per-frame NN distances in :data:`NN_BINS_NM`
        (the last bin is open); ``multimer_fraction`` = pooled multimer atoms /
        pooled atoms; ``density_per_nm2`` = pooled atoms on support / pooled
        support area (the whole frame when ``support_mask=False``). An
        uncalibrated frame is converted at :data:`DEFAULT_PIXEL_SIZE_NM`.
        """
        live = [f for f in self.frames if f["frame"] not in self.superseded]
        n = sum(f["n_atoms"] for f in live)
        n_sup = sum(f["n_atoms_in_support"] for f in live)
        mult = sum(f["multimer_atoms"] for f in live)
        area = sum(f["support_area_nm2"] for f in live)
        nn, n_nn = self._nn_sorted, self._nn_n
        hist = self._nn_counts
        lat = np.asarray(self.latencies)
        return {
            "n_frames": len(live), "n_atoms": int(n),
            "support_area_nm2": float(area), "density_per_nm2": n_sup / area if area else None,
            "multimer_atoms": int(mult), "multimer_fraction": mult / n if n else None,
            "multimer_cutoff_nm": self.multimer_cutoff_nm,
            "nn_dist_nm": {"mean": self._nn_mean if n_nn else None,
                           "median": float(0.5 * (nn[(n_nn - 1) // 2] + nn[n_nn // 2])) if n_nn else None,
                           "std": float(np.sqrt(self._nn_m2 / n_nn)) if n_nn else None, "n": int(n_nn)},
            "nn_hist": {"edges_nm": NN_BINS_NM.tolist(), "counts": hist.tolist()},
            "latency_s": {"last": float(lat[-1]) if len(lat) else None,
                          "median": float(np.median(lat)) if len(lat) else None,
                          "max": float(lat.max()) if len(lat) else None},
        }


# --------------------------------------------------------------------------- folder watching
class FrameWatcher:
    """Finds complete new (or changed) frames in a folder (see the module docstring).

    Parameters
    ----------
    settle_s : float
        Seconds a file's size and mtime must stay unchanged before it is offered.
    retry_s : float
        A file that failed to read is offered again when it changes, or after
        this many seconds (a permission granted later changes neither size nor mtime).
    """

    def __init__(self, folder, *, settle_s: float = 1.0, retry_s: float = 10.0, suffixes=None):
        from .io import SUPPORTED_SUFFIXES

        self.folder = Path(folder)
        self.settle_s = float(settle_s)
        self.retry_s = float(retry_s)
        self.suffixes = tuple(suffixes or SUPPORTED_SUFFIXES)
        self._seen: dict[str, tuple[int, int]] = {}    # last (size, mtime_ns)
        self._stable_since: dict[str, float] = {}      # when the last stamp was first seen
        self._done: dict[str, tuple[int, int]] = {}    # stamp when analysed
        self._failed: dict[str, tuple] = {}  # (stamp, monotonic time) when it failed to read
        self._writing: set[str] = set()  # final names of frames seen under a temporary name
        self._renamed: set[str] = set()  # ... whose temporary file has since been renamed

    @property
    def done(self) -> set[str]:
        """Names analysed (in their current version or an earlier one)."""
        return set(self._done)

    @staticmethod
    def _final_name(n: str) -> str | None:
        """The name a temporary file will be renamed to (``a.tif.tmp``, ``.a.tif``)."""
        low = n.lower()
        for suf in _IGNORED_SUFFIXES:
            if low.endswith(suf):
                return n[: -len(suf)]
        return n[1:] if n.startswith(".") and len(n) > 1 else None

    def _candidates(self):
        try:
            entries = list(os.scandir(self.folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []
        out = []
        writing = set()
        for e in entries:
            n = e.name
            if n.startswith(".") or n.lower().endswith(_IGNORED_SUFFIXES):
                final = self._final_name(n)
                if final:
                    writing.add(final)
                continue
            if not n.lower().endswith(self.suffixes):
                continue
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if self._done.get(n) == stamp:
                continue  # unchanged since it was analysed
            failed = self._failed.get(n)
            if failed is not None and failed[0] == stamp and time.monotonic() - failed[1] < self.retry_s:
                continue  # unchanged since it failed: retried later
            out.append((n, st.st_size, st.st_mtime_ns))
        # A frame seen under a temporary name that now exists under its final
        # name while the temporary one is gone was renamed by its writer: it is
        # complete, no need to wait for it to settle.
        present = {t[0] for t in out}
        self._renamed |= {f for f in self._writing - writing if f in present}
        self._writing = writing
        return sorted(out, key=lambda t: (t[2], t[0]))  # oldest first

    def poll(self) -> list[Path]:
        """Files whose size and mtime have not changed for ``settle_s`` (and
        since the previous poll), or that were just renamed from a temporary name."""
        now = time.monotonic()
        ready = []
        for n, size, mtime in self._candidates():
            prev = self._seen.get(n)
            self._seen[n] = (size, mtime)
            if prev != (size, mtime):
                self._stable_since[n] = now
            if size > 0 and (n in self._renamed or (
                    prev == (size, mtime) and now - self._stable_since[n] >= self.settle_s)):
                ready.append(self.folder / n)
        return ready

    def stable_for(self, path: Path) -> float:
        t = self._stable_since.get(path.name)
        return 0.0 if t is None else time.monotonic() - t

    def was_analysed(self, path: Path) -> bool:
        """True when an earlier version of ``path`` was analysed."""
        return path.name in self._done

    def mark_done(self, path: Path) -> None:
        """``path`` was analysed in the version last polled; offered again if it changes."""
        n = path.name
        self._done[n] = self._seen.get(n, (-1, -1))
        self._failed.pop(n, None)
        self._renamed.discard(n)

    def mark_failed(self, path: Path) -> None:
        """``path`` did not read in the version last polled; offered again when
        it changes or after ``retry_s``."""
        n = path.name
        self._failed[n] = (self._seen.get(n, (-1, -1)), time.monotonic())
        self._renamed.discard(n)

    def pending(self) -> int:
        return len(self._candidates())


@dataclass
class WatchReport:
    """What :func:`watch` did: frames analysed, bad frames (name → reason), outputs."""

    processed: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    superseded: list[int] = field(default_factory=list)
    interrupted: bool = False
    out: Path | None = None


_ATOM_FIELDS = ["frame", "image", "x_px", "y_px", "x_nm", "y_nm", "score", "intensity",
                "nn_dist_nm", "cluster_size"]


#: Columns of frames.csv: the per-frame rows of :attr:`LiveSession.frames`.
_FRAME_FIELDS = ["frame", "name", "n_atoms", "n_atoms_in_support", "multimer_atoms",
                 "support_area_nm2", "density_per_nm2", "nn_mean_nm", "multimer_fraction",
                 "latency_s", "calibrated", "supersedes"]


def _fmt(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str):  # file names may hold commas or quotes: CSV-quote them
        return f'"{v.replace(chr(34), 2 * chr(34))}"' if any(c in v for c in ',"\n\r') else v
    return "" if v is None or not np.isfinite(v) else f"{float(v):.6g}"


def watch(folder, out, *, detector="default", pixel_size_nm: float | None = None,
          multimer_cutoff_nm: float = 0.23, poll_s: float = 1.0, once: bool = False,
          max_frames: int | None = None, settle_s: float = 1.0, overlay: bool = True,
          refresh_s: int = 2, support_mask: bool = True, on_bad=None, on_frame=None,
          stop=None, retry_s: float = 10.0) -> WatchReport:
    """Analyse each new complete frame in ``folder`` as it appears.

    Writes to ``out``: ``atoms.csv`` (every atom so far, with its frame),
    ``frames.csv`` (one row per frame: counts, density, latency), ``stats.json``
    (:meth:`LiveSession.stats`), ``overlay.png`` (latest frame) and
    ``index.html`` (self-contained dashboard, refreshes every ``refresh_s`` s).
    The two tables are appended frame by frame and flushed to disk (atoms
    first, then the frame's row: ``frames.csv`` lists exactly the frames whose
    atoms are complete); the other files are rewritten atomically. The cost
    per frame does not grow with the session (``benchmarks/bench_watch.py``).

    Parameters
    ----------
    settle_s : float
        Seconds a file must stay unchanged (size and mtime) before it is read.
    once : bool
        Process the frames that are complete now and return (files still
        being written are waited for).
    max_frames : int, optional
        Stop after this many analysed frames.
    on_bad : callable, optional
        ``f(path, reason)`` for a frame that cannot be analysed (default: log).
    stop : threading.Event, optional
        Set it to stop the loop (Ctrl-C also stops it cleanly).
    retry_s : float
        A frame that failed to read is retried when it changes, or after this long.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    session = LiveSession(detector=detector, pixel_size_nm=pixel_size_nm,
                          multimer_cutoff_nm=multimer_cutoff_nm, support_mask=support_mask)
    log.info("warm-up frame analysed in %.2f s", session.warm_up())
    watcher = FrameWatcher(folder, settle_s=settle_s, retry_s=retry_s)
    rep = WatchReport(out=out)
    # Append-only tables: rewriting them per frame would cost O(frames so far)
    # each time. Each frame's atoms are appended and flushed first, then its
    # row in frames.csv, so frames.csv lists exactly the frames whose atoms are
    # complete, and a crash can only cut the frame being written.
    atoms_table = _AppendTable(out / "atoms.csv", _ATOM_FIELDS)
    frames_table = _AppendTable(out / "frames.csv", _FRAME_FIELDS)
    frame_rows: list[dict] = []
    latest: dict[str, int] = {}  # file name -> index of its latest analysed frame
    last_overlay = None
    renderer = None
    if overlay:
        from .figures import save_overlay

        renderer = _LatestOnly(save_overlay)
    first = True
    t_active, n_done = time.monotonic(), 0
    try:
        while True:
            if stop is not None and stop.is_set():
                break
            ready = watcher.poll()
            for path in ready:
                if max_frames is not None and len(rep.processed) >= max_frames:
                    break
                try:
                    r = session.process(path)
                except Exception as exc:  # noqa: BLE001 - one frame never stops the session
                    # Stable but unreadable: a writer that paused mid-file, a
                    # permission not yet granted... Reported once, retried when
                    # the file changes again.
                    watcher.mark_failed(path)
                    reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                    if rep.bad.get(path.name) != reason:
                        rep.bad[path.name] = reason
                        (on_bad or _log_bad)(path, reason)
                    continue
                old = latest.get(path.name)
                if old is not None:  # the file changed after it was analysed
                    session.retract(old)
                    rep.superseded.append(old)
                session.frames[-1]["supersedes"] = old
                latest[path.name] = r.index
                rep.bad.pop(path.name, None)
                watcher.mark_done(path)
                rep.processed.append(path.name)
                d = r.detections
                px = r.stats.get("pixel_size_nm")
                scale = px if px else np.nan
                nn_nm = r.nn_dist if px else np.full(len(d), np.nan)
                atoms_table.append([",".join(_fmt(v) for v in (
                    r.index, r.name, d.xy[i, 0], d.xy[i, 1], d.xy[i, 0] * scale,
                    d.xy[i, 1] * scale, d.score[i], d.intensity[i], nn_nm[i],
                    int(r.cluster_size[i]))) for i in range(len(d))])
                frame_rows.append(session.frames[-1])
                del frame_rows[:-10]  # the dashboard shows the last ten
                frames_table.append([",".join(_fmt(v) if not isinstance(v, bool) else str(v)
                                              for v in (session.frames[-1].get(k)
                                                        for k in _FRAME_FIELDS))])
                stats = session.stats()
                write_json(out / "stats.json", stats)
                if renderer is not None:
                    # Drawing a frame costs about as much as analysing it on a CPU
                    # and far more on a GPU: draw in the background, latest frame only.
                    renderer.submit(out / "overlay.png", r.micrograph.data, d.xy,
                                    pixel_size_nm=px, cluster_sizes=r.cluster_size, title=r.name)
                    if (out / "overlay.png").exists():
                        last_overlay = out / "overlay.png"
                _write_dashboard(out / "index.html", stats, frame_rows, last_overlay,
                                 refresh_s=refresh_s)
                if on_frame is not None:
                    on_frame(r)
            if max_frames is not None and len(rep.processed) >= max_frames:
                break
            if once:
                # Done when nothing is left, or nothing has moved (no frame done,
                # no file still growing) for longer than a bad file takes to settle.
                left = watcher.pending()
                if len(rep.processed) + len(rep.bad) > n_done or left > len(ready):
                    n_done, t_active = len(rep.processed) + len(rep.bad), time.monotonic()
                if not first and (left == 0 or time.monotonic() - t_active > settle_s + 2 * poll_s):
                    break
            first = False
            time.sleep(poll_s)
    except KeyboardInterrupt:
        rep.interrupted = True
    finally:
        if renderer is not None:
            renderer.close()  # the overlay of the last frame is on disk before we return
    if renderer is not None and (out / "overlay.png").exists():
        last_overlay = out / "overlay.png"
    _write_dashboard(out / "index.html", session.stats(), frame_rows, last_overlay,
                     refresh_s=refresh_s)
    return rep


class _LatestOnly:
    """Runs ``fn`` on one background thread for the most recently submitted
    arguments only: submissions that arrive while it is busy replace each other,
    so a slow renderer never holds up the analysis loop or falls behind it."""

    def __init__(self, fn, name: str = "fastsac-overlay"):
        import threading

        self.fn = fn
        self._cond = threading.Condition()
        self._job = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, *args, **kwargs) -> None:
        with self._cond:
            self._job = (args, kwargs)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._job is None:
                    return
                (args, kwargs), self._job = self._job, None
                self._busy = True
            try:
                self.fn(*args, **kwargs)
            except Exception as exc:  # a failed drawing must not stop the live loop
                log.warning("overlay not drawn: %s", exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self) -> None:
        """Finish the pending job, then stop the thread."""
        with self._cond:
            while self._job is not None or self._busy:
                self._cond.wait()
            self._closed = True
            self._cond.notify_all()
        self._thread.join()


def _log_bad(path, reason):
    log.warning("skipped %s: %s", path, reason)


class _AppendTable:
    """A CSV table that grows by appending: the header is written atomically when
    the table is created, then each :meth:`append` writes its lines in one call
    and flushes them to disk before returning."""

    def __init__(self, path, fields):
        self.path = Path(path)
        atomic_write_text(self.path, ",".join(fields) + "\n")

    def append(self, lines: list[str]) -> None:
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _svg_hist(counts, edges, width=420, height=140) -> str:
    counts = np.asarray(counts, float)
    top = counts.max() if len(counts) and counts.max() > 0 else 1.0
    bw = width / max(len(counts), 1)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{height - c / top * (height - 14):.1f}" width="{bw - 1:.1f}" '
        f'height="{c / top * (height - 14):.1f}" fill="#3b82f6"/>' for i, c in enumerate(counts))
    ticks = "".join(f'<text x="{i / (len(edges) - 1) * width:.1f}" y="{height + 12}" '
                    f'font-size="10" text-anchor="middle">{edges[i]:g}</text>'
                    for i in range(0, len(edges), 8))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 16}">'
            f'{bars}{ticks}</svg>')


def _write_dashboard(path, stats, rows, overlay_png, *, refresh_s: int = 2) -> None:
    """Self-contained HTML (inline PNG + SVG) that reloads itself, through the
    same writer as the batch report (:mod:`fastsac.html_page`)."""
    nn = stats["nn_dist_nm"]
    boxes = [(stats["n_atoms"], "atoms"), (fmt(stats["density_per_nm2"]), "atoms / nm²"),
             (fmt(stats["multimer_fraction"]),
              f"multimer share (NN &lt; {stats['multimer_cutoff_nm']:g} nm)"),
             (fmt(nn["mean"]), "mean NN, nm"), (fmt(stats["latency_s"]["last"]), "last latency, s")]
    parts = [f"<h1>fastsac live — {stats['n_frames']} frames</h1>",
             "<div class='grid'>" + "".join(f"<div class='note'><b style='font-size:1.5em'>{v}</b>"
                                            f"<br>{k}</div>" for v, k in boxes) + "</div>",
             "<h2>NN distance distribution (nm, pooled)</h2>",
             _svg_hist(stats["nn_hist"]["counts"], stats["nn_hist"]["edges_nm"])]
    if overlay_png is not None and Path(overlay_png).exists():
        parts += ["<h2>Latest frame</h2>", img_tag(Path(overlay_png).read_bytes(), "latest frame")]
    parts += ["<h2>Recent frames</h2>",
              table(["frame", "name", "atoms", "density (/nm²)", "multimer share", "latency (s)"],
                    [[r["frame"], r["name"], r["n_atoms"], r["density_per_nm2"], r["multimer_fraction"],
                      r["latency_s"]] for r in rows[-10:][::-1]]),
              f"<p class='meta'>updated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    atomic_write_text(path, page("fastsac live", parts, refresh_s=refresh_s))

