"""Huge simulated montages written chunk by chunk with bounded memory.

The atoms of the whole montage are drawn once (a few hundred thousand points,
a few MB); every pixel field is a hash of global coordinates (see
:mod:`fastsac.synth.render`), so chunks join seamlessly and each chunk's
noise-free content equals the same region of a whole-image simulation. Only
the shot/read noise is drawn per chunk, from ``default_rng([seed, 2, i, j])``
for chunk ``(i, j)``. Memory is a few chunk-sized float64 buffers plus the
atom table: a 32768² uint16 montage stays well under 1 GB of RSS.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .params import SimulationParams
from .render import Field, to_dtype

__all__ = ["write_montage", "MontageResult"]

log = logging.getLogger(__name__)

_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".zarr": "zarr"}


@dataclass(frozen=True)
class MontageResult:
    """What :func:`write_montage` wrote: ``paths`` maps ``"tiff"``/``"zarr"``/
    ``"truth"`` to files; ``shape``, ``tile``, ``n_atoms``, ``seconds``."""

    paths: dict
    shape: tuple
    tile: int
    n_atoms: int
    seconds: float
    params: dict = field(default_factory=dict, repr=False)


def _chunks(fld: Field, tile: int, dtype: str, seed: int, progress: bool, sinks=()):
    """Yield (tile, tile) chunks in row-major order (edge chunks zero-padded)."""
    from tqdm.auto import tqdm

    H, W = fld.height, fld.width
    nr, nc = -(-H // tile), -(-W // tile)
    with tqdm(total=nr * nc, desc="montage", unit="chunk", disable=not progress) as bar:
        for i in range(nr):
            for j in range(nc):
                r0, c0 = i * tile, j * tile
                h, w = min(tile, H - r0), min(tile, W - c0)
                img = to_dtype(fld.render(r0, c0, h, w, rng=np.random.default_rng([seed, 2, i, j])),
                               dtype)
                for sink in sinks:
                    sink(r0, c0, img)
                if (h, w) != (tile, tile):
                    pad = np.zeros((tile, tile), img.dtype)
                    pad[:h, :w] = img
                    img = pad
                bar.update(1)
                yield img


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


def write_montage(path: str | os.PathLike, *, size: int = 32768, tile: int = 1024,
                  formats: tuple | None = None, params: SimulationParams | None = None,
                  compression: str | None = None, progress: bool = True,
                  **kwargs) -> MontageResult:
    """Write a ``size`` × ``size`` simulated montage as tiled BigTIFF and/or Zarr.

    Parameters
    ----------
    path : path-like
        Output file. Its suffix picks the format (``.tif``/``.tiff``: tiled
        BigTIFF; ``.zarr``: Zarr v3 store) unless ``formats`` is given, in
        which case ``path`` with each format's suffix is written. The truth
        goes to ``<stem>_truth.parquet`` beside it (columns ``X, Y, element,
        cluster_id, cluster_size, parent_id``; px in montage coordinates;
        the parameters as JSON in the file metadata).
    size : int
        Edge length, px.
    tile : int
        Chunk/tile edge, px (a multiple of 16 for TIFF).
    formats : tuple of {"tiff", "zarr"}, optional
    params : SimulationParams, optional
        Base parameters (``size`` is overridden). By default vacuum comes as
        holes (``vacuum="holes"``) and output is uint16.
    compression : str, optional
        TIFF compression (e.g. ``"zlib"``); Zarr uses its default (zstd).
    progress : bool
        Show a tqdm progress bar.
    **kwargs
        Other :class:`SimulationParams` fields (``seed``, ``loading_per_nm2`` …).

    Returns
    -------
    MontageResult
    """
    t0 = time.perf_counter()
    path = Path(path)
    size, tile = int(size), int(tile)
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 px, got {tile}")
    if formats is None:
        fmt = _FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"path must end in .tif, .tiff or .zarr (or pass formats=), got {path.name!r}")
        targets = {fmt: path}
    else:
        bad = [f for f in formats if f not in ("tiff", "zarr")]
        if bad or not formats:
            raise ValueError(f"formats must be a non-empty subset of ('tiff', 'zarr'), got {formats!r}")
        stem = path.with_suffix("") if path.suffix.lower() in _FORMATS else path
        targets = {f: stem.with_suffix(".tif" if f == "tiff" else ".zarr") for f in formats}
    base = dict(vacuum="holes", dtype="uint16")
    base.update(kwargs)
    p = (dataclasses.replace(params, size=size, **kwargs) if params is not None
         else SimulationParams(size=size, **base))
    fld = Field(p)
    log.info("montage %d² px, %d atoms, tiles %d²", size, len(fld.xy_image), tile)
    stem_any = next(iter(targets.values()))
    truth_path = stem_any.with_name(stem_any.with_suffix("").name + "_truth.parquet")
    stem_any.parent.mkdir(parents=True, exist_ok=True)

    sinks = []
    zarr_tmp = None
    if "zarr" in targets:
        import zarr

        zarr_tmp = targets["zarr"].with_name(f".{targets['zarr'].name}.tmp")
        if zarr_tmp.exists():
            shutil.rmtree(zarr_tmp)
        arr = zarr.create_array(store=str(zarr_tmp), shape=(size, size), chunks=(tile, tile),
                                dtype=p.dtype, fill_value=0,
                                attributes={"pixel_size_nm": p.pixel_size_nm, "unit": "nm",
                                            "simulation": json.loads(json.dumps(
                                                p.as_dict(), default=_jsonable))})

        def zsink(r0, c0, img, arr=arr):
            arr[r0:r0 + img.shape[0], c0:c0 + img.shape[1]] = img

        sinks.append(zsink)
    gen = _chunks(fld, tile, p.dtype, p.seed, progress, sinks)
    try:
        if "tiff" in targets:
            import tifffile

            from ..io import atomic_path

            res = 1e7 / p.pixel_size_nm  # px per cm: fastsac.read's "tiff-resolution" calibration
            with atomic_path(targets["tiff"]) as tmp:
                tifffile.imwrite(tmp, gen, shape=(size, size), dtype=np.dtype(p.dtype),
                                 tile=(tile, tile), bigtiff=True, resolution=(res, res),
                                 resolutionunit="CENTIMETER", compression=compression,
                                 description=json.dumps({"fastsac.synth": p.as_dict()},
                                                        default=_jsonable))
        else:
            for _ in gen:
                pass
        if zarr_tmp is not None:
            _replace_dir(zarr_tmp, targets["zarr"])
    except BaseException:
        if zarr_tmp is not None and zarr_tmp.exists():
            shutil.rmtree(zarr_tmp, ignore_errors=True)
        raise
    _write_truth_parquet(truth_path, fld, p)
    paths = {k: v for k, v in targets.items()} | {"truth": truth_path}
    return MontageResult(paths, (size, size), tile, len(fld.xy_image), time.perf_counter() - t0,
                         p.as_dict())


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, np.ndarray)):
        return list(o)
    return str(o)


def _write_truth_parquet(path: Path, fld: Field, p: SimulationParams) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io import atomic_path

    a = fld.atoms
    xy = fld.xy_image
    inside = ((xy[:, 0] >= -0.5) & (xy[:, 0] < fld.width - 0.5)
              & (xy[:, 1] >= -0.5) & (xy[:, 1] < fld.height - 0.5)) if len(xy) else np.zeros(0, bool)
    table = pa.table({"X": xy[inside, 0], "Y": xy[inside, 1], "element": a.element[inside].astype(str),
                      "cluster_id": a.unit_id[inside], "cluster_size": a.unit_size[inside],
                      "parent_id": a.parent_id[inside]})
    meta = {b"fastsac.synth": json.dumps(p.as_dict(), default=_jsonable).encode(),
            b"support_area_nm2": str(fld.support_area_nm2).encode()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
