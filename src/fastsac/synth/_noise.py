"""Counter-based (hash) random fields: values are pure functions of the seed and
the *global* coordinates, so any chunk of a montage computes exactly the values
a whole-image call computes, with no state shared between chunks.

* :func:`hash_uniform` – uniform [0, 1) from integer keys (splitmix64 mixing).
* :func:`perlin` – 2-D gradient noise with lattice spacing 1 at real coordinates.
* :func:`fbm` – sum of rotated, offset Perlin octaves at given wavelengths (px),
  normalised to unit standard deviation per octave.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_P1 = np.uint64(0x8CB92BA72F3D8DD7)
_P2 = np.uint64(0xD6E8FEB86659FD93)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_S60 = np.uint64(60)
# 16 unit gradient directions, picked by the top 4 bits of the lattice hash.
_GX = np.cos(np.arange(16) * np.pi / 8)
_GY = np.sin(np.arange(16) * np.pi / 8)
# Empirical standard deviation of :func:`perlin` over a large area (unit gradients).
_PERLIN_STD = 0.2155


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic, no warnings)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def stream_key(seed: int, stream: int) -> np.uint64:
    z = np.array([(int(seed) & 0xFFFFFFFFFFFFFFFF)], np.uint64)
    z = _mix(z ^ np.array([(int(stream) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF], np.uint64))
    return z[0]


def hash_u64(key: np.uint64, i, j=None) -> np.ndarray:
    """64-bit hash of integer coordinates ``i`` (and ``j``) under ``key``."""
    i = np.asarray(i, np.int64).view(np.uint64) if np.asarray(i).dtype != np.uint64 else np.asarray(i)
    z = (i * _P1) ^ key
    if j is not None:
        j = np.asarray(j, np.int64).view(np.uint64)
        z = _mix(z) ^ (j * _P2)
    return _mix(z + _GOLD)


def hash_uniform(key: np.uint64, i, j=None) -> np.ndarray:
    """Uniform [0, 1) float64 from integer coordinates."""
    return (hash_u64(key, i, j) >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def hash_normal(key: np.uint64, i, j=None) -> np.ndarray:
    """Standard normal float64 from integer coordinates (Box–Muller on two hashes)."""
    h = hash_u64(key, i, j)
    u1 = ((h >> _S11).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    u2 = (_mix(h) >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _fade(t):
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin(key: np.uint64, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """2-D Perlin gradient noise at real lattice coordinates ``(u, v)``; zero at
    lattice nodes, standard deviation ≈ 0.22, smooth (C²)."""
    iu = np.floor(u)
    iv = np.floor(v)
    fu = u - iu
    fv = v - iv
    iu = iu.astype(np.int64)
    iv = iv.astype(np.int64)
    out = None
    wu, wv = _fade(fu), _fade(fv)
    for du in (0, 1):
        for dv in (0, 1):
            g = (hash_u64(key, iu + du, iv + dv) >> _S60).astype(np.int64)
            dot = _GX[g] * (fu - du) + _GY[g] * (fv - dv)
            w = (wu if du else 1.0 - wu) * (wv if dv else 1.0 - wv)
            out = w * dot if out is None else out + w * dot
    return out


def octave(seed: int, stream: int, x: np.ndarray, y: np.ndarray, wavelength: float) -> np.ndarray:
    """One unit-variance Perlin octave of the given wavelength (px) at world
    coordinates ``(x, y)``, rotated and offset by a hash of ``(seed, stream)``
    so that octaves do not share lattice axes."""
    key = stream_key(seed, stream)
    r = hash_uniform(key, np.array([1, 2, 3], np.int64))
    th = r[0] * 2 * np.pi
    c, s = np.cos(th), np.sin(th)
    u = (c * x - s * y) / wavelength + r[1] * 1000.0
    v = (s * x + c * y) / wavelength + r[2] * 1000.0
    return perlin(key, u, v) / _PERLIN_STD


def fbm(seed: int, stream: int, x, y, wavelengths, amplitudes) -> np.ndarray:
    """Sum of :func:`octave` fields ``Σ a_k · octave(λ_k)``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    out = np.zeros(np.broadcast(x, y).shape)
    for k, (lam, amp) in enumerate(zip(wavelengths, amplitudes)):
        if amp:
            out += amp * octave(seed, stream * 64 + k, x, y, lam)
    return out


# --------------------------------------------------------------------------- numba kernels
# Same arithmetic as the numpy functions above (the numpy code is the spec);
# fused loops make a per-pixel octave ~20× cheaper, which matters for montages
# of 10⁹ pixels.
_nb_cache: dict = {}


def _numba_kernels():
    if "perlin" in _nb_cache:
        return _nb_cache
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
        _nb_cache["perlin"] = None
        return _nb_cache

    M1, M2, GOLD, P1, P2 = (np.uint64(v) for v in (_M1, _M2, _GOLD, _P1, _P2))

    @numba.njit(cache=True, inline="always")
    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        return z ^ (z >> np.uint64(31))

    GX, GY = _GX.copy(), _GY.copy()

    @numba.njit(cache=True, inline="always")
    def hg(key, i, j):
        z = mix((np.uint64(i) * P1) ^ key) ^ (np.uint64(j) * P2)
        return np.int64(mix(z + GOLD) >> np.uint64(60))

    @numba.njit(cache=True, inline="always")
    def fade(t):
        return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)

    @numba.njit(cache=True)
    def perlin_nb(key, u, v, scale, out):
        for n in range(u.size):
            fu0 = np.floor(u[n])
            fv0 = np.floor(v[n])
            iu = np.int64(fu0)
            iv = np.int64(fv0)
            fu = u[n] - fu0
            fv = v[n] - fv0
            wu = fade(fu)
            wv = fade(fv)
            acc = 0.0
            for du in range(2):
                for dv in range(2):
                    g = hg(key, iu + du, iv + dv)
                    dot = GX[g] * (fu - du) + GY[g] * (fv - dv)
                    w = (wu if du else 1.0 - wu) * (wv if dv else 1.0 - wv)
                    acc += w * dot
            out[n] += scale * acc

    _nb_cache["perlin"] = perlin_nb
    return _nb_cache


def octave_add(out: np.ndarray, seed: int, stream: int, x, y, wavelength: float, amp: float,
               *, backend: str = "auto") -> None:
    """``out += amp · octave(seed, stream, x, y, wavelength)`` in place (numba when available)."""
    nb = _numba_kernels()["perlin"] if backend in ("auto", "numba") else None
    if nb is None:
        out += amp * octave(seed, stream, x, y, wavelength)
        return
    key = stream_key(seed, stream)
    r = hash_uniform(key, np.array([1, 2, 3], np.int64))
    th = r[0] * 2 * np.pi
    c, s = np.cos(th), np.sin(th)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    u = ((c * x - s * y) / wavelength + r[1] * 1000.0).ravel()
    v = ((s * x + c * y) / wavelength + r[2] * 1000.0).ravel()
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")  # pragma: no cover - internal use
    nb(key, u, v, amp / _PERLIN_STD, out.reshape(-1))


def fbm_fast(seed: int, stream: int, x, y, wavelengths, amplitudes, *, backend: str = "auto"):
    """Same values as :func:`fbm` (to rounding), using the numba kernel."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    out = np.zeros(np.broadcast(x, y).shape)
    xb, yb = np.broadcast_arrays(x, y)
    for k, (lam, amp) in enumerate(zip(wavelengths, amplitudes)):
        if amp:
            octave_add(out, seed, stream * 64 + k, xb, yb, lam, amp, backend=backend)
    return out
