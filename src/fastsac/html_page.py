"""The one HTML writer: page shell, style, tables, embedded images.

The batch report (:mod:`fastsac.report`) and the live dashboard
(:mod:`fastsac.live`) both render through it, so they look alike and neither
duplicates the other; pages are self-contained (inline PNG/SVG, no external
assets).
"""

from __future__ import annotations

import base64
import html
import math

import numpy as np

__all__ = ["CSS", "img_tag", "fmt", "pval", "table", "page"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1240px;color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0.1em}h2{border-bottom:2px solid #dde;padding-bottom:4px;margin-top:1.6em}
h3{margin-bottom:0.3em}.meta{color:#666;font-size:0.9em}
table{border-collapse:collapse;font-size:0.85em;margin:8px 0}
th,td{border:1px solid #ccd;padding:3px 7px;text-align:right}
th{background:#eef0f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f8f9fc}tr.pooled td{font-weight:bold;background:#fff6dd}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:10px;align-items:start}
.grid img{width:100%;border:1px solid #dde}.wide{grid-column:1/-1}.wide img{max-width:820px}
.scroll{overflow-x:auto}.note{font-size:0.85em;color:#444;background:#f6f7fa;padding:8px 12px;
border-left:3px solid #99a}.sig{color:#b00;font-weight:bold}
"""


def img_tag(png: bytes, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<div{c}><img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></div>')


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits, int(math.log10(abs(v))) + 1)}g}"
    return html.escape(str(v))


def pval(v) -> str:
    s = fmt(v)
    return f'<span class="sig">{s}</span>' if v is not None and np.isfinite(v) and v < 0.05 else s


def table(header: list, rows: list, pooled_row=None) -> str:
    out = ['<div class="scroll"><table><tr>' + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for r, cls in [(r, "") for r in rows] + ([(pooled_row, "pooled")] if pooled_row else []):
        cells = []
        for v in r:
            cells.append(pval(v[1]) if isinstance(v, tuple) else fmt(v))
        out.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table></div>"




def page(title: str, body: list[str] | str, *, refresh_s: float | None = None) -> str:
    """A whole HTML document: ``body`` parts under the shared style; with
    ``refresh_s`` the browser reloads it that often (live dashboard)."""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    parts = body if isinstance(body, str) else "\n".join(body)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{refresh}"
            f"<title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style>"
            f"</head><body>{parts}</body></html>")
