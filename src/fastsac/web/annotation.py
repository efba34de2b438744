"""Crowdsourced annotation inside ``fastsac serve`` (issue 15).

:func:`annotation_setup` opens the annotation store (``DIR/annotations.sqlite3`` or a
``postgresql://`` URL), builds :func:`fastsac.annotate.routes.annotation_routes` over the
app's images (pixels from the upload, model proposals from the finished analysis's
atoms, calibration from the upload) and returns an authenticator wrapper:

* requests carrying an annotation user's API token or session get that user as the
  identity — on the annotation paths for every role, everywhere for admins;
* a write to an annotation path without such a user is refused with 401 right here,
  before the CSRF check and the route, whatever the image id (``/api/login`` excepted);
* reads of the annotation paths are passed through to their handlers, which authenticate
  by themselves, so that annotators log in on ``/annotate`` without the app's shared token;
* everything else keeps the app's own authentication.
"""

from __future__ import annotations

import re
from pathlib import Path

from .security import Identity

__all__ = ["annotation_setup", "ANNOTATION_PATH", "ANNOTATION_BODY_LIMIT"]

#: Paths served by the annotation routes (they authenticate every request themselves).
ANNOTATION_PATH = re.compile(r"^/(annotate(/.*)?|api/(login|logout|me)|api/annotate/.*|"
                             r"api/images/.+/(annotations|consensus|proposals|annotation-image\.png))$")
#: Body limit of annotation saves (many points), above the app's JSON limit.
ANNOTATION_BODY_LIMIT = 4 << 20


def annotation_setup(ctx, *, database: str | None = None):
    """``(routes, wrap_authenticator)`` of annotation for the app context ``ctx``."""
    from ..annotate import AnnotationStore
    from ..annotate.routes import annotation_routes, user_from_request

    store = AnnotationStore.open(database, data_dir=ctx.data)

    def image_row(iid: str):
        return ctx.store.get_image(iid)

    def image_source(iid: str):
        from ..io import read

        im = image_row(iid)
        if im is None:
            return None
        return read(ctx.data / "images" / im["id"] / im["filename"]).data

    def proposals(iid: str):
        from ..io import read_points

        im = image_row(iid)
        if im is None:
            return []
        folder = ctx.jobs.result_folder(im)
        atoms = None if folder is None else Path(folder) / "atoms.csv"
        return read_points(atoms).tolist() if atoms is not None and atoms.exists() else []

    def pixel_size(iid: str):
        im = image_row(iid)
        return None if im is None else im.get("pixel_size_nm")

    routes = annotation_routes(store, image_source=image_source, proposals=proposals,
                               models_dir=ctx.data / "models", pixel_size=pixel_size)

    def wrap(base):
        def authenticate(request):
            path = request.url.path
            annotation_path = bool(ANNOTATION_PATH.match(path))
            if request.headers.get("authorization") or request.cookies.get("fastsac_session"):
                got = user_from_request(store, request)
                if got is not None and (annotation_path or got[0].role == "admin"):
                    return Identity(got[0].name, (got[0].role,))
            if annotation_path:
                # A write needs an annotation account: refused here, before the CSRF check
                # and the route (401 whatever the image id); login is the one exception.
                if request.method not in ("GET", "HEAD", "OPTIONS") and path != "/api/login":
                    return None
                return base(request) or Identity("anonymous", ())
            return base(request)

        return authenticate

    ctx.annotations = store
    return routes, wrap
