"""``fastsac serve``: the browser app (upload, look, take away; montages and live sessions).

:func:`create_app` builds the Starlette ASGI app over a data folder; see
``docs/web.md`` for the HTTP API, the security model and the extension points.
Importing this package needs ``starlette`` (and ``python-multipart``), never a GPU.
"""

from .app import create_app

__all__ = ["create_app"]
