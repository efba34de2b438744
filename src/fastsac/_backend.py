"""One dispatch for every kernel (``backend="auto"|"cpp"|"cuda"|"numpy"``) and
one resolution of the torch device (:func:`resolve_device`).

Each kernel registers implementations by name. ``auto`` resolves by where the
data lives (a CUDA array -> ``cuda``; host memory -> ``cpp`` if the compiled
module loaded, else the ``numpy`` reference). Asking explicitly for a backend
that is not available raises, with the reason.

CUDA implementations are registered by dotted path
(``kernel.register_path("cuda", "fastsac._cuda.peaks:nms_cuda")``) and
imported on first use, so the stage modules never import the kernel modules at
import time and the kernel modules never import the stages (no import circle).
Nothing here imports CUDA, cupy or numba at module import time.
"""

from __future__ import annotations

import enum
import functools
import importlib
from typing import Callable

from ._validate import resolve_option


class Backend(str, enum.Enum):
    AUTO = "auto"
    CPP = "cpp"
    CUDA = "cuda"
    NUMPY = "numpy"


@functools.lru_cache(maxsize=None)
def _core():
    """The compiled module, or None when it was not built."""
    try:
        return importlib.import_module("fastsac._core")
    except ImportError:
        return None


@functools.lru_cache(maxsize=None)
def unavailable_reason(backend: Backend) -> str | None:
    """None if ``backend`` can run here, else why not."""
    if backend is Backend.NUMPY:
        return None
    if backend is Backend.CPP:
        return None if _core() is not None else (
            "the C++ extension fastsac._core is not built (reinstall with `pip install .`)")
    if backend is Backend.CUDA:
        try:
            from numba import cuda
        except ImportError:
            return "numba is not installed"
        try:
            if not cuda.is_available():
                return "no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)"
        except Exception as exc:  # driver problems surface here
            return f"CUDA unusable: {exc}"
        return None
    return f"unknown backend {backend}"


def is_device_array(a) -> bool:
    """True for arrays living on a CUDA device (torch, cupy, numba)."""
    if hasattr(a, "__cuda_array_interface__"):
        return True
    dev = getattr(a, "device", None)
    return getattr(dev, "type", None) == "cuda"


class _Implementations(dict):
    """Backend -> callable; a ``"module:attribute"`` string is imported on first access."""

    def __getitem__(self, backend):
        fn = super().__getitem__(backend)
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
            super().__setitem__(backend, fn)
        return fn


class Kernel:
    """A named kernel with one implementation per backend."""

    def __init__(self, name: str, reference: Callable):
        self.name = name
        self.impls: dict[Backend, Callable] = _Implementations({Backend.NUMPY: reference})
        functools.update_wrapper(self, reference)

    def register(self, backend: str | Backend):
        b = Backend(backend)

        def deco(fn):
            self.impls[b] = fn
            return fn
        return deco

    def register_path(self, backend: str | Backend, target: str) -> None:
        """Register ``"package.module:function"``, imported when first used."""
        self.impls[Backend(backend)] = target

    def resolve(self, backend: str | Backend = "auto", *, data=None) -> Backend:
        b = resolve_option(backend, Backend, "backend")
        if b is Backend.AUTO:
            order = [Backend.CUDA] if data is not None and is_device_array(data) else []
            order += [Backend.CPP, Backend.NUMPY]
            for cand in order:
                if cand in self.impls and self._why_not(cand) is None:
                    return cand
            raise RuntimeError(f"no backend available for {self.name}")  # numpy always is
        if b not in self.impls:
            raise NotImplementedError(
                f"{self.name} has no {b.value!r} backend; available: "
                f"{sorted(x.value for x in self.impls)}")
        why = self._why_not(b)
        if why:
            raise RuntimeError(f"backend={b.value!r} requested for {self.name} but {why}")
        return b

    def _why_not(self, b: Backend) -> str | None:
        why = unavailable_reason(b)
        if why is None and b is Backend.CPP and not hasattr(_core(), self.name):
            why = f"this build of fastsac._core has no {self.name!r} kernel"
        return why

    def __call__(self, *args, backend: str | Backend = "auto", **kwargs):
        b = self.resolve(backend, data=args[0] if args else None)
        return self.impls[b](*args, **kwargs)

    def available(self) -> list[str]:
        return [b.value for b in self.impls if self._why_not(b) is None]


def kernel(reference: Callable) -> Kernel:
    """Decorator: the decorated numpy function becomes the reference (spec) of a Kernel."""
    return Kernel(reference.__name__.removesuffix("_numpy_ref").lstrip("_"), reference)


def core():
    """The compiled module; raises if it is missing (call only from cpp implementations)."""
    mod = _core()
    if mod is None:
        raise RuntimeError(unavailable_reason(Backend.CPP))
    return mod


def on_device(kernel: Kernel, backend, *arrays) -> Backend | None:
    """CUDA when the first array lives on a GPU and ``backend`` allows it, else None.

    Public wrappers call this before coercing inputs to numpy: device arrays
    (torch, cupy, numba) then go to the CUDA kernel untouched and results stay
    on the device.
    """
    if not arrays or not is_device_array(arrays[0]):
        return None
    b = resolve_option(backend, Backend, "backend")
    if b not in (Backend.AUTO, Backend.CUDA):
        raise ValueError(f"{kernel.name}: input lives on a CUDA device but backend={b.value!r}; "
                         "use backend='cuda' or 'auto', or copy the data to the host first")
    return kernel.resolve(Backend.CUDA)


def resolve_device(device="auto"):
    """The ``torch.device`` for ``device`` = ``"auto"`` (CUDA when torch sees one, else
    CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.

    This is the one place a device name is resolved; everything downstream takes the
    resolved device. Raises ValueError for an unknown name and RuntimeError for
    ``"cuda"`` on a machine where torch sees no CUDA device.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch sees no CUDA device; "
                           "use device='cpu' or 'auto'")
    return dev
