"""Run montage analysis on a Dask cluster (local processes or a real cluster).

Each chunk of :func:`fastsac.montage.detect_montage` (and of the support
mask's block-mean binning, :func:`fastsac.montage.montage_support_mask`, and
of the species photometry, :func:`fastsac.montage.montage_species`)
becomes one Dask task.
A task receives only a small, picklable :class:`~fastsac.montage.MontageSource`
(path + shape) and its core; it opens the file itself and reads its own
chunk + halo, so nothing big crosses the network. The DoG scratch array lives
in ``scratch_dir``, which every worker must see (local disk for a
LocalCluster; a shared/parallel filesystem on a real cluster). Results are
consumed in chunk order, so the output is identical to the in-process run.

Examples
--------
>>> from fastsac.dask_runner import dask_runner               # doctest: +SKIP
>>> from fastsac.montage import analyze_montage               # doctest: +SKIP
>>> with dask_runner(workers=4) as runner:                    # doctest: +SKIP
...     res = analyze_montage("montage.tif", runner=runner)
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

__all__ = ["DaskRunner", "dask_runner"]

log = logging.getLogger(__name__)


class DaskRunner:
    """``map(fn, args, desc=...)`` over a ``distributed.Client``: tasks run in
    parallel; results are yielded in input order (deterministic reductions)."""

    name = "dask"

    def __init__(self, client, *, progress: bool = True):
        self.client = client
        self.progress = progress

    def map(self, fn: Callable, args: list[tuple], *, desc: str) -> Iterator:
        from tqdm import tqdm

        if not args:
            return
        # Arguments shared by every task (the source, the tiling) are scattered
        # once instead of being serialised into each task.
        shared: dict[int, object] = {}
        cols = list(zip(*args))
        out_cols = []
        for col in cols:
            first = col[0]
            if all(c is first for c in col) and not isinstance(first, (int, float, str)):
                if id(first) not in shared:
                    shared[id(first)] = self.client.scatter(first, broadcast=True, hash=False)
                out_cols.append([shared[id(first)]] * len(col))
            else:
                out_cols.append(list(col))
        futures = self.client.map(fn, *out_cols, pure=False)
        bar = tqdm(total=len(futures), desc=desc, unit="tile", disable=not self.progress)
        try:
            for i in range(len(futures)):
                f = futures[i]
                res = f.result()
                futures[i] = None  # let the worker drop the result
                f.release()
                bar.update(1)
                yield res
        finally:
            bar.close()
            for f in futures:
                if f is not None:
                    f.cancel()


@contextlib.contextmanager
def dask_runner(*, workers: int | None = None, scheduler: str | None = None,
                progress: bool = True, memory_limit: str = "auto",
                dashboard: bool = False) -> Iterator[DaskRunner]:
    """A :class:`DaskRunner` on a new local cluster or an existing scheduler.

    Parameters
    ----------
    workers : int, optional
        Start ``distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
        processes=True)`` on loopback; closed on exit.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``), e.g. started by
        ``dask scheduler`` / ``dask worker`` or dask-jobqueue. Left running.
    """
    if (workers is None) == (scheduler is None):
        raise ValueError("give exactly one of workers=N or scheduler='tcp://host:port'")
    from distributed import Client, LocalCluster

    cluster = None
    if workers is not None:
        if int(workers) < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        # One single-threaded process per core: OpenMP inside the C++ median
        # would otherwise oversubscribe the cores.
        single = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               host="127.0.0.1", memory_limit=memory_limit,
                               dashboard_address=":0" if dashboard else None, env=single)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    log.info("dask: %s", client)
    try:
        yield DaskRunner(client, progress=progress)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
