"""Helpers shared by the route modules: errors, safe names, result files, CSV to JSON."""

from __future__ import annotations

import csv
import math
import re
import unicodedata
from pathlib import Path, PurePosixPath

from starlette.responses import FileResponse, Response
from starlette.responses import JSONResponse as _StarletteJSON

STATIC_DIR = Path(__file__).parent / "static"
#: Detectors the page offers: names only. A checkpoint path is never taken from
#: the web (a checkpoint is a pickle; only the operator chooses files to load).
DETECTORS = ("default", "classical", "rescore", "heatmap")

__all__ = ["STATIC_DIR", "DETECTORS", "JSONResponse", "json_safe", "error", "safe_upload_name", "serve_file", "csv_columns", "ctx_of", "finite"]

#: A result file a route may serve: one or two plain path components.
RESULT_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,100})?$")
CONTENT_TYPES = {".png": "image/png", ".csv": "text/csv; charset=utf-8", ".json": "application/json",
                 ".html": "text/html; charset=utf-8", ".parquet": "application/vnd.apache.parquet",
                 ".zip": "application/zip", ".jpeg": "image/jpeg", ".jpg": "image/jpeg"}
#: Reports are self-contained HTML with inline styles and data: images and no
#: scripts; they are served sandboxed so they cannot act on the app.
REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def json_safe(obj):
    """``obj`` with NaN/inf replaced by None (JSON has no NaN; summaries may hold some)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class JSONResponse(_StarletteJSON):
    """Strict JSON: NaN and infinities become null instead of failing the response."""

    def render(self, content) -> bytes:
        return super().render(json_safe(content))


def ctx_of(request):
    return request.app.state.ctx


def error(status: int, message: str) -> JSONResponse:
    """The one error shape of the API: ``{"error": "one line"}``."""
    return JSONResponse({"error": message}, status_code=status)


def safe_upload_name(filename: str | None, *, default: str = "upload") -> str:
    """A file name that is only a name: no directory part, ASCII letters,
    digits, ``_`` and ``-`` in the stem, the suffix lower-cased.

    >>> safe_upload_name("../../x.tif")
    'x.tif'
    >>> safe_upload_name("C:\\\\data\\\\Pt NC (1).TIFF")
    'Pt_NC_1.tiff'
    """
    base = re.split(r"[\\/]", filename or "")[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    p = PurePosixPath(base)
    suffix = p.suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", p.suffix or "") else ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", p.stem if suffix else base).strip("_-")[:80]
    return (stem or default) + suffix


def serve_file(folder: Path, name: str, *, download: bool = False) -> Response:
    """``folder/name`` if ``name`` is a plain relative result path inside it, else 404."""
    if not RESULT_FILE.match(name) or ".." in name.split("/"):
        return error(404, f"no file {name!r}")
    path = (folder / name)
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if not inside or not path.is_file():
        return error(404, f"no file {name!r}")
    ctype = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    headers = {}
    if path.suffix.lower() == ".html":
        headers["content-security-policy"] = REPORT_CSP
    if download or path.suffix.lower() in (".csv", ".json", ".parquet", ".zip"):
        return FileResponse(path, media_type=ctype, headers=headers, filename=path.name)
    return FileResponse(path, media_type=ctype, headers=headers)


def finite(v):
    """JSON-safe number: NaN/inf become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def csv_columns(path: Path, *, max_rows: int | None = None) -> tuple[list[str], dict[str, list]]:
    """A CSV as columns: numbers where every value parses, else strings; empty → None."""
    with open(path, newline="", encoding="utf-8") as fh:
        rd = csv.reader(fh)
        header = next(rd, [])
        rows = [r for r, _ in zip(rd, range(max_rows)) if len(r) == len(header)] if max_rows else \
            [r for r in rd if len(r) == len(header)]
    cols: dict[str, list] = {}
    for j, name in enumerate(header):
        vals = [r[j] for r in rows]
        try:
            cols[name] = [None if v == "" else finite(float(v)) for v in vals]
        except ValueError:
            cols[name] = [v if v != "" else None for v in vals]
    return header, cols
