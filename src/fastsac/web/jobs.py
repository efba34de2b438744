"""Analysis jobs of the web app, run outside the server process.

The job functions (:func:`analyze_image_job`, :func:`batch_report_job`,
:func:`compare_job`) are plain top-level functions over paths and numbers, so
they run in a :class:`concurrent.futures.ProcessPoolExecutor` worker or as a
Dask task alike; they only call fastsac's public API (``fastsac.io.read``,
``fastsac.pipeline.analyze`` / ``write_result``, ``fastsac.report``) and write
files under the folder they are given. They never raise: a failure comes back
as ``{"ok": False, "error": "<one line>"}`` so the page can show it.

:class:`JobManager` submits them to a runner (:class:`ProcessRunner`,
:class:`ThreadRunner`, :class:`DaskRunner`) and records the outcome in the
:class:`~fastsac.web.db.Store` when the future completes. Arguments and
results are small dicts of paths and numbers; the runners move them between
processes with the executor's own serialisation — uploaded bytes are never
unpickled, they are only ever read by ``fastsac.io.read``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path

from .db import DONE, FAILED, QUEUED, RUNNING, Store

__all__ = ["analyze_image_job", "render_extras_job", "batch_report_job", "compare_job", "JobManager", "ProcessRunner",
           "ThreadRunner", "DaskRunner", "make_runner", "read_progress"]

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
RESULT_DIR = "result"
#: Figures drawn per image by :func:`render_extras_job`.
PLOTS = ("nn_histogram.png", "cluster_sizes.png", "pair_correlation.png")
# (written by fastsac.figures.save_statistics_plots into the result folder)


# --------------------------------------------------------------------------- worker side
def _progress(image_dir: Path, stage: str, fraction: float) -> None:
    from ..io import atomic_write_text

    atomic_write_text(image_dir / PROGRESS_FILE,
                      json.dumps({"stage": stage, "fraction": round(fraction, 3), "time": time.time()}))


def read_progress(image_dir: str | Path) -> dict | None:
    """The stage a running job reported last, or None before it started."""
    try:
        return json.loads((Path(image_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def analyze_image_job(upload: str, image_dir: str, *, detector: str = "default",
                      multimer_cutoff_nm: float = 0.23, pixel_size_nm: float | None = None,
                      n_sim: int = 99) -> dict:
    """Analyse one stored upload into ``image_dir/result/<name>/``.

    Writes what :func:`fastsac.result.write_result` writes (atoms.csv,
    atoms.parquet, summary.json, support_mask.png, overlay.png) except the
    plots, which :func:`render_extras_job` draws next from the saved result, so
    the result is shown as soon as it exists. ``n_sim``: random placements of
    the pair-correlation test. Progress goes to ``image_dir/progress.json``.

    Returns
    -------
    dict
        ``{"ok": True, "folder": name}`` or ``{"ok": False, "error": one line}``.
    """
    from ..errors import FastsacInputError

    image_dir = Path(image_dir)
    try:
        from ..io import read
        from ..pipeline import analyze
        from ..result import write_result

        _progress(image_dir, "reading", 0.05)
        root = image_dir / RESULT_DIR
        if root.exists():  # a re-analysis replaces the previous result as a whole
            shutil.rmtree(root)
        m = read(upload, pixel_size_nm=pixel_size_nm)
        _progress(image_dir, "detecting", 0.2)
        res = analyze(m, detector=detector, multimer_cutoff_nm=multimer_cutoff_nm,
                      pair_correlation=n_sim > 0, pair_correlation_params={"n_sim": n_sim})
        _progress(image_dir, "writing", 0.7)
        write_result(res, root / m.name, plots=False)
        _progress(image_dir, "done", 1.0)
        return {"ok": True, "folder": m.name}
    except FastsacInputError as exc:  # name the file as the user knows it, not the server path
        return {"ok": False, "error": _one_line(f"{Path(upload).name}: {exc.reason}")}
    except Exception as exc:  # the page shows one line; the log keeps the traceback
        log.exception("analysis of %s failed", upload)
        return {"ok": False, "error": f"analysis failed: {type(exc).__name__}: {_one_line(exc)}"}


def render_extras_job(result_folder: str) -> dict:
    """The statistics plots (nn_histogram.png, cluster_sizes.png,
    pair_correlation.png) and ``report.html`` of an analysed image, drawn by
    :mod:`fastsac.figures` / :mod:`fastsac.report` from the saved result
    (:func:`fastsac.result.load_result`; nothing is recomputed)."""
    try:
        from ..figures import save_statistics_plots
        from ..report import ImageReport, write_html_report
        from ..result import load_result

        saved = load_result(result_folder)
        made = save_statistics_plots(result_folder, saved.stats, saved.pattern)
        write_html_report(Path(result_folder) / "report.html", [ImageReport.from_saved(saved)],
                          title=f"fastsac: {saved.name}")
        return {"ok": True, "plots": sorted(made)}
    except Exception as exc:
        log.exception("plots of %s failed", result_folder)
        return {"ok": False, "error": f"plots failed: {type(exc).__name__}: {_one_line(exc)}"}


def _load_reports(roots):
    from ..report import load_analysis_folder

    reports = []
    for root in roots:
        reports += load_analysis_folder(root, progress=False)
    return reports


def batch_report_job(result_roots: list[str], out_dir: str, *, title: str, summaries: list[dict]) -> dict:
    """Pooled statistics, plots, ``summary.csv`` and ``report.html`` of a batch.

    ``result_roots``: the ``result/`` folders of the batch's finished images;
    ``summaries``: their summary.json dicts (for ``summary.csv``). Writes into
    ``out_dir`` and returns ``{"ok": True, "pooled": {...}}``.
    """
    try:
        from ..figures import cluster_size_figure, nn_histogram_figure, save_figure
        from ..io import write_json
        from ..report import write_html_report
        from ..result import summary_row, write_summary_csv
        from ..spatial.stats import pool_dispersion

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        reports = _load_reports(result_roots)
        write_summary_csv(out / "summary.csv", [summary_row(s) for s in summaries])
        write_html_report(out / "report.html", reports, title=title)
        pooled_stats = pool_dispersion([r.stats for r in reports], names=[r.name for r in reports])
        pooled = pooled_stats.as_dict()
        pooled.pop("per_image", None)
        write_json(out / "report.json", {"images": [r.as_dict() for r in reports], "pooled": pooled})
        save_figure(out / "pooled_nn_histogram.png", nn_histogram_figure(pooled_stats, title="pooled NN distances"))
        save_figure(out / "pooled_cluster_sizes.png", cluster_size_figure(pooled_stats, title="pooled cluster sizes"))
        return {"ok": True, "pooled": json.loads(json.dumps(pooled, default=_json_default))}
    except Exception as exc:
        log.exception("batch report failed")
        return {"ok": False, "error": f"batch report failed: {type(exc).__name__}: {_one_line(exc)}"}


def compare_job(roots_a: list[str], roots_b: list[str], out_dir: str, *, names: tuple[str, str],
                n_perm: int = 9999) -> dict:
    """Two-batch comparison (what ``fastsac report A --compare B`` computes):
    ``out_dir/report.html`` and ``{"ok": True, "comparison": {...}}``."""
    try:
        from ..report import write_html_report
        from ..spatial.stats import compare_samples

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ra, rb = _load_reports(roots_a), _load_reports(roots_b)
        if not ra or not rb:
            return {"ok": False, "error": "both batches need at least one finished image"}
        comp = compare_samples([r.stats for r in ra], [r.stats for r in rb], n_perm=n_perm, seed=0)
        write_html_report(out / "report.html", ra, title=f"fastsac: {names[0]} vs {names[1]}",
                          comparison=comp, comparison_names=tuple(names))
        d = comp.as_dict() | {"sample_a": names[0], "sample_b": names[1]}
        return {"ok": True, "comparison": json.loads(json.dumps(d, default=_json_default))}
    except Exception as exc:
        log.exception("comparison failed")
        return {"ok": False, "error": f"comparison failed: {type(exc).__name__}: {_one_line(exc)}"}


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        v = o.item()
        return None if isinstance(v, float) and not np.isfinite(v) else v
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _warm() -> None:
    """Worker initialiser: import the analysis stack once, before the first job."""
    import fastsac.pipeline  # noqa: F401
    import fastsac.report  # noqa: F401


# --------------------------------------------------------------------------- runners
class ProcessRunner:
    """Jobs in local worker processes (spawned: no fork of a threaded server).

    A worker that dies (killed, out of memory) breaks a ProcessPoolExecutor for
    good: its jobs fail with one line, and the next submission starts a new pool.
    """

    name = "processes"

    def __init__(self, workers: int):
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self):
        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_warm)

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures.process import BrokenProcessPool

        with self._lock:
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                log.warning("a worker process died; starting new workers")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ThreadRunner:
    """Jobs in threads of the server process (tests, tiny deployments)."""

    name = "threads"

    def __init__(self, workers: int = 1):
        self.workers = workers
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastsac-job")

    def submit(self, fn, /, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner:
    """Jobs as tasks on a Dask scheduler (``fastsac serve --scheduler ADDR``).

    The workers must see the server's data folder at the same path (local
    cluster, or a shared filesystem), as for ``fastsac montage --scheduler``.
    """

    name = "dask"

    def __init__(self, scheduler):
        from distributed import Client

        self.client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        self._own = not isinstance(scheduler, Client)

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def submit(self, fn, /, *args, **kwargs):
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def shutdown(self) -> None:
        if self._own:
            self.client.close()


def make_runner(*, workers: int | None = None, scheduler=None):
    """The runner ``fastsac serve`` uses: Dask when ``scheduler`` is given, else
    ``workers`` processes (0: threads in the server, for tests)."""
    if scheduler is not None:
        return DaskRunner(scheduler)
    if workers is None:
        workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    if workers == 0:
        return ThreadRunner(1)
    return ProcessRunner(workers)


# --------------------------------------------------------------------------- server side
class JobManager:
    """Submits jobs and records their outcome in the store.

    Image jobs write under ``DATA/images/<id>/``; when the last unfinished
    image of a batch completes, the batch report is (re)made. On start, jobs
    left queued/running by a previous server are submitted again.
    """

    def __init__(self, store: Store, data_dir: Path, runner, *, n_sim: int = 99, n_perm: int = 9999):
        self.store = store
        self.data = Path(data_dir)
        self.runner = runner
        self.n_sim = n_sim
        self.n_perm = n_perm
        self._lock = threading.Lock()
        self._futures: dict[str, object] = {}
        self._extras: dict[str, object] = {}

    def image_dir(self, iid: str) -> Path:
        return self.data / "images" / iid

    def batch_dir(self, bid: str) -> Path:
        return self.data / "batches" / bid

    def compare_dir(self, cid: str) -> Path:
        return self.data / "comparisons" / cid

    def result_folder(self, image: dict) -> Path | None:
        """``DATA/images/<id>/result/<name>`` of a finished image, else None."""
        root = self.image_dir(image["id"]) / RESULT_DIR
        found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return found[0] if found else None

    def resume(self) -> int:
        left = self.store.unfinished_images()
        for im in left:
            self.submit_image(im["id"])
        for im in self.store.unfinished_extras():
            self._submit_extras(im["id"])
        return len(left)

    def submit_image(self, iid: str) -> None:
        im = self.store.get_image(iid)
        d = self.image_dir(iid)
        (d / PROGRESS_FILE).unlink(missing_ok=True)
        p = im["params"]
        fut = self.runner.submit(analyze_image_job, str(d / im["filename"]), str(d),
                                 detector=p.get("detector", "default"),
                                 multimer_cutoff_nm=float(p.get("multimer_cutoff_nm", 0.23)),
                                 pixel_size_nm=p.get("pixel_size_nm"), n_sim=self.n_sim)
        with self._lock:
            self._futures[iid] = fut
        fut.add_done_callback(lambda f, iid=iid: self._image_done(iid, f))

    def status(self, image: dict) -> tuple[str, dict | None]:
        """The image's state, with the progress its worker reported."""
        st = image["status"]
        prog = None
        if st in (QUEUED, RUNNING):
            prog = read_progress(self.image_dir(image["id"]))
            if prog is not None and st == QUEUED:
                self.store.mark_running(image["id"])
                st = RUNNING
        return st, prog

    def _image_done(self, iid: str, fut) -> None:
        with self._lock:
            if self._futures.get(iid) is not fut:
                return  # superseded by a re-analysis
            self._futures.pop(iid, None)
        try:
            out = fut.result()
        except BaseException as exc:  # worker died (killed, out of memory) or cancelled at shutdown
            out = {"ok": False, "error": f"worker failed: {type(exc).__name__}: {_one_line(exc)}"}
        try:
            if out.get("ok"):
                folder = self.image_dir(iid) / RESULT_DIR / out["folder"]
                summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
                self.store.finish_image(iid, summary=summary)
                self._submit_extras(iid)
            else:
                self.store.finish_image(iid, error=out["error"])
            im = self.store.get_image(iid)
            if im and im["batch_id"]:
                self.maybe_batch_report(im["batch_id"])
        except Exception:  # the server is shutting down (store closed) or the files vanished
            log.exception("recording the result of image %s failed", iid)

    def _submit_extras(self, iid: str) -> None:
        self.store.set_extras(iid, QUEUED)
        folder = self.result_folder(self.store.get_image(iid))
        fut = self.runner.submit(render_extras_job, str(folder))
        with self._lock:
            self._extras[iid] = fut

        def done(f):
            with self._lock:
                if self._extras.get(iid) is not f:
                    return
                self._extras.pop(iid, None)
            try:
                out = f.result()
            except BaseException as exc:
                out = {"ok": False, "error": f"worker failed: {type(exc).__name__}: {_one_line(exc)}"}
            try:
                self.store.set_extras(iid, DONE if out.get("ok") else FAILED, error=out.get("error"))
            except Exception:
                log.exception("recording the plots of image %s failed", iid)

        fut.add_done_callback(done)

    # ------------------------------------------------------------------ batches
    def batch_key(self, bid: str) -> str:
        ims = self.store.list_images(bid)
        return ",".join(f"{i['id']}:{i['status']}:{i['finished']}" for i in ims)

    def maybe_batch_report(self, bid: str, *, force: bool = False) -> bool:
        """(Re)make the batch report when no image of the batch is still in work."""
        ims = self.store.list_images(bid)
        if any(i["status"] in (QUEUED, RUNNING) for i in ims):
            return False
        done = [i for i in ims if i["status"] == DONE]
        b = self.store.get_batch(bid)
        key = self.batch_key(bid)
        if not done:
            self.store.set_batch_report(bid, None)
            return False
        if not force and b["report_key"] == key and b["report_status"] in (QUEUED, RUNNING, DONE):
            return False
        self.store.set_batch_report(bid, QUEUED, key=key)
        roots = [str(self.image_dir(i["id"]) / RESULT_DIR) for i in done]
        fut = self.runner.submit(batch_report_job, roots, str(self.batch_dir(bid)), title=f"fastsac: {b['name']}",
                                 summaries=[i["summary"] for i in done])
        fut.add_done_callback(lambda f: self._batch_done(bid, key, f))
        return True

    def _batch_done(self, bid: str, key: str, fut) -> None:
        try:
            out = fut.result()
        except BaseException as exc:
            out = {"ok": False, "error": f"worker failed: {type(exc).__name__}: {_one_line(exc)}"}
        try:
            if self.store.get_batch(bid)["report_key"] != key:
                return  # a newer report is on its way
            if out.get("ok"):
                self.store.set_batch_report(bid, DONE)
            else:
                self.store.set_batch_report(bid, FAILED, error=out["error"])
        except Exception:
            log.exception("recording the report of batch %s failed", bid)

    # ------------------------------------------------------------------ comparisons
    def submit_compare(self, a: str, b: str) -> str:
        cid = self.store.add_comparison(a, b)
        roots = []
        for bid in (a, b):
            roots.append([str(self.image_dir(i["id"]) / RESULT_DIR) for i in self.store.list_images(bid)
                          if i["status"] == DONE])
        names = (self.store.get_batch(a)["name"], self.store.get_batch(b)["name"])
        fut = self.runner.submit(compare_job, roots[0], roots[1], str(self.compare_dir(cid)), names=names,
                                 n_perm=self.n_perm)

        def done(f):
            try:
                out = f.result()
            except BaseException as exc:
                out = {"ok": False, "error": f"worker failed: {type(exc).__name__}: {_one_line(exc)}"}
            try:
                if out.get("ok"):
                    self.store.finish_comparison(cid, result=out["comparison"])
                else:
                    self.store.finish_comparison(cid, error=out["error"])
            except Exception:
                log.exception("recording comparison %s failed", cid)

        fut.add_done_callback(done)
        return cid

    def shutdown(self) -> None:
        self.runner.shutdown()


__all__ += ["QUEUED", "RUNNING", "DONE", "FAILED"]
