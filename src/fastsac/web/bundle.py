"""Zip bundles of results through :func:`fastsac.result.write_bundle` (the one
bundle writer every view shares), with unique folder names inside a batch."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_bundle"]


def write_bundle(zip_path, image_dirs, *, batch_files=()) -> Path:
    """Write ``zip_path``: every folder of ``image_dirs`` under its name, then
    ``batch_files`` at the top. Two images of one batch may share a file name:
    the later ones are packed as ``<name>_2``, ``<name>_3`` … (through symbolic
    links in a scratch folder beside the zip; nothing is copied)."""
    from ..result import write_bundle as shared

    zip_path = Path(zip_path)
    dirs = [Path(d) for d in image_dirs]
    if len({d.name for d in dirs}) == len(dirs):
        return shared(zip_path, dirs, batch_files=batch_files)
    with tempfile.TemporaryDirectory(dir=zip_path.parent) as tmp:
        used: set[str] = set()
        named = []
        for d in dirs:
            name, k = d.name, 2
            while name in used:
                name, k = f"{d.name}_{k}", k + 1
            used.add(name)
            link = Path(tmp) / name
            os.symlink(d.resolve(), link, target_is_directory=True)
            named.append(link)
        return shared(zip_path, named, batch_files=batch_files)
