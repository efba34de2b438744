"""Fuzzing the readers (issue 16, part 10): TIFF, PNG, JPEG and .npy files with
mutated headers, truncated or spliced bytes either read as a valid 2-D float32
finite image or raise one FastsacInputError naming the file, in one line, with
bounded memory (numpy's allocations are traced by tracemalloc)."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastsac.errors import FastsacInputError  # noqa: E402
from fastsac.io import Micrograph, read  # noqa: E402

from .battery import png_bytes, spot_image, tiff_bytes  # noqa: E402

PEAK_LIMIT = 600 * 2**20  # bytes traced while reading one ≤ 100 kB file


def _seeds() -> dict[str, bytes]:
    img = spot_image(64, n=4)
    npy = io.BytesIO()
    np.save(npy, img)
    jpg = io.BytesIO()
    from PIL import Image

    Image.fromarray((img / 8).astype(np.uint8)).save(jpg, format="JPEG")
    return {
        ".tif": tiff_bytes(img, imagej=True, resolution=(1 / 0.03, 1 / 0.03),
                           metadata={"unit": "nm"}),
        ".tiff": tiff_bytes(img.astype(np.uint16), tile=(32, 32), compression="zlib"),
        ".png": png_bytes((img / 8).astype(np.uint8)),
        ".jpg": jpg.getvalue(),
        ".npy": npy.getvalue(),
    }


SEEDS = _seeds()


@st.composite
def mutated(draw):
    suffix = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[suffix])
    n_edits = draw(st.integers(1, 6))
    for _ in range(n_edits):
        kind = draw(st.sampled_from(["byte", "word", "truncate", "splice", "zero"]))
        # Headers and IFDs live near the start (and, for tifffile, wherever an
        # offset points): bias edits to the first 512 bytes.
        hi = min(len(data) - 1, draw(st.sampled_from([64, 512, len(data) - 1])))
        if hi < 1:
            break
        pos = draw(st.integers(0, hi))
        if kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "word":
            data[pos:pos + 4] = draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f",
                 b"\x00\x00\x01\x00", b"\x01\x00\x00\x80"]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            end = draw(st.integers(pos, len(data)))
            data[pos:end] = bytes(end - pos)
    return suffix, bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_files_read_or_fail_in_one_line(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        try:
            m = read(path)
        except FastsacInputError as exc:
            msg = str(exc)
            assert "\n" not in msg and str(path) in msg and exc.reason
        else:
            assert isinstance(m, Micrograph)
            assert m.data.ndim == 2 and m.data.dtype == np.float32
            assert np.isfinite(m.data).all() and m.data.max() > m.data.min()
            assert m.pixel_size_nm is None or 1e-4 <= m.pixel_size_nm <= 1e3
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"{peak / 2**20:.0f} MiB traced reading {len(data)} bytes"


def test_unmutated_seeds_read(tmp_path):
    """The fuzzer starts from valid images (else it would only test rejection)."""
    for suffix, data in SEEDS.items():
        read_path = tmp_path / f"seed{suffix}"
        read_path.write_bytes(data)
        m = read(read_path)
        assert m.shape == (64, 64), suffix
        assert (m.pixel_size_nm is not None) == (suffix == ".tif"), suffix
