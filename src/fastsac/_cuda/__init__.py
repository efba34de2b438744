"""numba CUDA implementations of fastsac's kernels.

Importing these modules is cheap and needs neither CUDA nor numba: the
kernels are compiled on first use (``numba.cuda`` is imported there). Each
module registers a ``"cuda"`` implementation on the existing
:class:`fastsac._backend.Kernel` objects. They accept host (numpy) arrays —
copied to the device and back — and device arrays exposing
``__cuda_array_interface__`` (torch CUDA tensors, cupy, numba), which stay on
the device (results come back as the same library's arrays).

Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in numba's CUDA
simulator on the CPU (slow; for tests on small inputs).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def cuda():
    """The ``numba.cuda`` module (imported lazily)."""
    import os

    # Small grids (few peaks) are fine here; the low-occupancy warning is noise.
    os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
    if not hasattr(np, "row_stack"):
        # numba-cuda releases up to 0.2x register an overload for np.row_stack, which
        # numpy 2.4 removed; their typing registry then fails to import and no kernel
        # compiles. It was an alias of vstack.
        np.row_stack = np.vstack
    from numba import cuda as _cuda

    try:  # the env var is read at numba import; set the live config too
        from numba.core import config as _config

        _config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    except ImportError:
        pass
    return _cuda


def library(a) -> str:
    """'numpy', 'torch', 'cupy' or 'numba' for an input array."""
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return "torch"
    if mod == "cupy":
        return "cupy"
    if hasattr(a, "__cuda_array_interface__") or hasattr(a, "copy_to_host"):
        return "numba"  # numba device arrays (also the simulator's)
    return "numpy"


def to_device(a, dtype):
    """A numba device array view (device input, no copy when the dtype and
    layout already fit) or a fresh copy of host input."""
    lib = library(a)
    cu = cuda()
    if lib == "torch":
        if a.device.type != "cuda":
            return cu.to_device(np.ascontiguousarray(a.numpy(), dtype))
        import torch

        t = a.detach().to(getattr(torch, np.dtype(dtype).name)).contiguous()
        return cu.as_cuda_array(t)
    if lib == "cupy":
        import cupy

        return cu.as_cuda_array(cupy.ascontiguousarray(a, dtype=dtype))
    if lib == "numba":
        d = a if hasattr(a, "copy_to_host") else cu.as_cuda_array(a)
        if d.dtype == np.dtype(dtype) and d.is_c_contiguous():
            return d
        return cu.to_device(np.ascontiguousarray(d.copy_to_host(), dtype))
    return cu.to_device(np.ascontiguousarray(a, dtype))


def from_device(d, like_lib: str):
    """Return device array ``d`` as the library of the input (host for numpy)."""
    if like_lib == "numpy":
        return d.copy_to_host()
    if like_lib == "torch":
        import torch

        return torch.as_tensor(d, device="cuda")
    if like_lib == "cupy":
        import cupy

        return cupy.asarray(d)
    return d


def on_device(a) -> bool:
    lib = library(a)
    if lib == "torch":
        return a.device.type == "cuda"
    return lib in ("cupy", "numba")


def host(a) -> np.ndarray:
    """Host numpy copy of any supported array."""
    lib = library(a)
    if lib == "torch":
        return a.detach().cpu().numpy()
    if lib == "cupy":
        return a.get()
    if lib == "numba":
        return (a if hasattr(a, "copy_to_host") else cuda().as_cuda_array(a)).copy_to_host()
    return np.asarray(a)


def grid(n: int, threads: int = 128):
    return (max(1, (int(n) + threads - 1) // threads), threads)


# --------------------------------------------------------------------------- torch glue
# Array work between kernels (sorting, compaction, prefix sums) uses torch on the
# device; kernels see the same memory through __cuda_array_interface__ (no copies).
# Under the simulator the glue runs on CPU tensors and kernels get copies.
def simulated() -> bool:
    import os

    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def tdevice():
    import torch

    return torch.device("cpu" if simulated() or not torch.cuda.is_available() else "cuda")


def as_torch(a, dtype):
    """A contiguous torch tensor of ``dtype`` (numpy dtype) on the glue device."""
    import torch

    tdt = getattr(torch, np.dtype(dtype).name)
    dev = tdevice()
    lib = library(a)
    if lib == "torch":
        t = a.detach()
    elif lib == "numpy":
        t = torch.from_numpy(np.ascontiguousarray(a, dtype))
    elif dev.type == "cuda":  # cupy / numba device arrays
        t = torch.as_tensor(a, device="cuda")
    else:
        t = torch.from_numpy(host(a))
    return t.to(device=dev, dtype=tdt).contiguous()


def to_lib(t, lib: str):
    """Return torch tensor ``t`` as the caller's library (numpy for host input)."""
    if lib == "numpy":
        return t.cpu().numpy()
    if lib == "cupy":
        import cupy

        return cupy.asarray(t)
    if lib == "numba":
        return cuda().as_cuda_array(t) if t.device.type == "cuda" else cuda().to_device(t.numpy())
    return t


def launch(kernel, griddim, blockdim, args, writes=()):
    """Launch ``kernel`` on torch tensors (zero-copy views on a GPU; copies in and
    back out of the simulator for the argument positions in ``writes``)."""
    import torch

    cu = cuda()
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor):
            conv.append(cu.as_cuda_array(a) if a.device.type == "cuda"
                        else cu.to_device(a.numpy()))
        else:
            conv.append(a)
    kernel[griddim, blockdim](*conv)
    for i in writes:
        if args[i].device.type != "cuda":
            args[i].copy_(torch.from_numpy(conv[i].copy_to_host()))
