"""Zip bundles of results: each analysis folder under its own name, plus batch files.

Uses :func:`fastsac.result.write_bundle` when the installed fastsac has it
(the one writer every view shares); until then an equivalent local writer.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

__all__ = ["write_bundle"]


def _local_write_bundle(zip_path, image_dirs, *, batch_files=()) -> Path:
    from ..io import atomic_path

    zip_path = Path(zip_path)
    used: set[str] = set()
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for d in image_dirs:
                d = Path(d)
                name, k = d.name, 2
                while name in used:  # two images of one batch with the same file name
                    name, k = f"{d.name}_{k}", k + 1
                used.add(name)
                for root, dirs, files in os.walk(d):
                    dirs.sort()
                    for f in sorted(files):
                        p = Path(root) / f
                        zf.write(p, f"{name}/{p.relative_to(d).as_posix()}")
            for f in batch_files:
                f = Path(f)
                if f.is_file():
                    zf.write(f, f.name)
    return zip_path


def write_bundle(zip_path, image_dirs, *, batch_files=()) -> Path:
    """Write ``zip_path``: every folder of ``image_dirs`` under its name, then ``batch_files`` at the top."""
    try:
        from ..result import write_bundle as shared
    except ImportError:
        return _local_write_bundle(zip_path, image_dirs, batch_files=batch_files)
    shared(zip_path, image_dirs, batch_files=batch_files)
    return Path(zip_path)
