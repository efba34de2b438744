"""``fastsac serve``: the browser app on http://127.0.0.1:8765/ (docs/web.md)."""

from __future__ import annotations

import ipaddress
import sys


def add_parser(sub):
    p = sub.add_parser("serve", help="the browser app: upload, view, download (http://127.0.0.1:8765/)",
                       description="Start the web app. DIR holds its SQLite database, uploads and results. "
                                   "It binds to loopback unless --host says otherwise; then every request "
                                   "needs the token (printed, or --token / $FASTSAC_TOKEN).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    p.add_argument("--data", default="fastsac-data", metavar="DIR",
                   help="data folder: database, uploads, results (default: %(default)s)")
    p.add_argument("--token", default=None,
                   help="shared access token (default: $FASTSAC_TOKEN; generated when --host is not loopback)")
    p.add_argument("--workers", type=int, default=None,
                   help="analysis worker processes (default: half the cores, at most 4)")
    p.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="run analyses on this Dask scheduler (workers must see DIR at the same path)")
    p.add_argument("--max-upload-mb", type=float, default=512, help="largest upload (default: %(default)s MB)")
    p.add_argument("--max-pixels", type=int, default=8192 * 8192,
                   help="largest uploaded image in pixels (default: %(default)s)")
    p.add_argument("--montage", action="append", default=[], metavar="OUT",
                   help="a `fastsac montage` output folder to browse (repeatable)")
    p.add_argument("--live", action="append", default=[], metavar="OUT",
                   help="a `fastsac watch` output folder to follow live (repeatable)")
    p.add_argument("--database", default=None, metavar="URL",
                   help="annotation database: postgresql://... for a shared server "
                        "(default: DIR/annotations.sqlite3; accounts: fastsac users add NAME --data DIR)")
    p.add_argument("--n-sim", type=int, default=99,
                   help="random placements for the g(r)/L envelopes of each image (default: %(default)s)")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    import os
    import secrets

    from ..errors import FastsacInputError

    try:
        import uvicorn

        from ..web import create_app
    except ImportError as exc:
        print(f"fastsac serve: needs starlette, uvicorn and python-multipart ({exc}); "
              "pip install fastsac installs them", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("FASTSAC_TOKEN") or None
    if not is_loopback(args.host) and not token:
        token = secrets.token_urlsafe(24)
    try:
        app = create_app(args.data, token=token, max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                         max_pixels=args.max_pixels, scheduler=args.scheduler, workers=args.workers,
                         montages=args.montage, live=args.live, n_sim=args.n_sim,
                         annotation_database=args.database)
    except (FastsacInputError, OSError) as exc:
        print(f"fastsac serve: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. an unreachable --database: one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastsac serve: cannot start: {first}", file=sys.stderr)
        return 2
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"fastsac serve: {url}{'?token=' + token if token else ''}  (data in {os.path.abspath(args.data)}; "
          "Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0
