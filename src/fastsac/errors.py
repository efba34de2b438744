"""Exceptions raised by fastsac."""

from __future__ import annotations

import os


class FastsacInputError(ValueError):
    """An input file or array cannot be analysed.

    The message always names the offending file (when there is one) and says
    what is wrong with it, so that a batch can report one clear line per bad
    file instead of a traceback.
    """

    def __init__(self, source: str | os.PathLike | None, reason: str) -> None:
        self.source = None if source is None else os.fspath(source)
        self.reason = reason
        where = f"{self.source}: " if self.source is not None else ""
        super().__init__(f"{where}{reason}")

    def __reduce__(self):
        # Rebuilt from (source, reason) when it crosses a process boundary (Dask workers).
        return type(self), (self.source, self.reason)
