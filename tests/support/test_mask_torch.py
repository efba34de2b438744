"""The GPU (torch) support mask equals the CPU one; here torch runs on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from fastsac_testdata import PTNC  # noqa: E402

from fastsac.support import mask_torch as mt  # noqa: E402
from fastsac.support.mask_torch import support_mask_torch  # noqa: E402
from fastsac.support.mask import _near, _otsu_from_hist, support_mask  # noqa: E402

from .test_mask import textured_support, with_vacuum  # noqa: E402


def _same(a, b):
    assert a.has_vacuum == b.has_vacuum
    assert a.mask.shape == b.mask.shape
    iou = (a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1)
    assert iou >= 0.999, iou
    assert b.vacuum_fraction == pytest.approx(a.vacuum_fraction, abs=1e-3)
    if a.has_vacuum:
        assert b.contrast == pytest.approx(a.contrast, rel=1e-4)
        assert b.texture_ratio == pytest.approx(a.texture_ratio, rel=1e-3)


@pytest.mark.parametrize("working_px", [6.0, np.inf])
def test_synthetic_vacuum_gradient_and_flat(rng, working_px):
    img, _ = with_vacuum(rng, (256, 256))
    _same(support_mask(img, pixel_size_nm=0.03, working_px=working_px),
          support_mask_torch(img, pixel_size_nm=0.03, working_px=working_px, device="cpu"))
    tex = textured_support(rng, (256, 256))
    grad = rng.poisson(tex * np.linspace(0.35, 1.0, 256)[None, :]).astype(np.float64) + 170.0
    b = support_mask_torch(grad, pixel_size_nm=0.03, working_px=working_px, device="cpu")
    assert b.mask.all() and not b.has_vacuum
    _same(support_mask(grad, pixel_size_nm=0.03, working_px=working_px), b)
    flat = support_mask_torch(np.full((64, 64), 5.0), device="cpu")
    assert flat.mask.all() and flat.support_area_nm2 is None


def test_real_images():
    paths = sorted((PTNC / "images").glob("*.tif"))
    if not paths:
        pytest.skip("real data not available")
    import fastsac

    n_vacuum = 0
    for p in paths:
        m = fastsac.read(p)
        a = support_mask(m.data, pixel_size_nm=m.pixel_size_nm)
        b = support_mask_torch(m.data, pixel_size_nm=m.pixel_size_nm, device="cpu")
        _same(a, b)
        np.testing.assert_array_equal(a.mask, b.mask, err_msg=p.name)
        n_vacuum += a.has_vacuum
    assert n_vacuum == 7  # 021 025 027 034 037 038 045 show vacuum


def _torch(a):
    import torch

    return torch.as_tensor(a)


def test_histogram_matches_numpy(rng):
    import torch

    for v in (rng.normal(0, 1, 5001), np.log(rng.uniform(1, 9, 4000)),
              np.repeat(rng.normal(size=7), 50),                # ties
              np.linspace(-1, 1, 257)):                         # values on the bin edges
        lo, hi = float(v.min()), float(v.max())
        counts, edges = mt._histogram(_torch(v), torch.tensor(lo, dtype=torch.float64),
                                      torch.tensor(hi, dtype=torch.float64), 256)
        want_c, want_e = np.histogram(v, bins=256)
        np.testing.assert_array_equal(edges.numpy(), want_e)
        np.testing.assert_array_equal(counts.numpy(), want_c)
        assert float(mt._otsu(counts, edges)) == _otsu_from_hist(want_c, want_e)


def test_percentile_matches_numpy(rng):
    import torch

    for n in (1, 2, 3, 200, 1001):
        v = rng.normal(3, 2, n).astype(np.float32)
        s = torch.sort(_torch(v)).values
        for q in (0, 37.5, 50, 99.5, 100):
            assert float(mt._lerp_percentile(s, q)) == np.percentile(v.astype(np.float64), q)


def test_class_medians_match_numpy(rng):
    for n in (1, 2, 7, 100, 1001):
        v32 = rng.normal(0, 3, n).astype(np.float32)       # negative values too
        v32[: n // 4] = v32[0]                              # ties
        flags = rng.random(n) < 0.4
        for flags_ in (flags, np.zeros(n, bool), np.ones(n, bool)):
            t = _torch(v32)
            m_in, m_out = mt._class_medians(t, mt._orderable(t), _torch(flags_))
            for m, sel in ((m_in, flags_), (m_out, ~flags_)):
                if sel.any():
                    assert float(m) == float(np.median(v32[sel]))
                else:
                    assert np.isnan(float(m))
            # float64 values ordered by float32 keys (the mask's lin = smooth - floor)
            v64 = v32.astype(np.float64) + 0.125
            m_in, _ = mt._class_medians(_torch(v64), mt._orderable(t), _torch(flags_))
            if flags_.any():
                assert float(m_in) == float(np.median(v64[flags_]))


def test_near_matches_distance_transform(rng):
    from scipy import ndimage as ndi

    for shape, radius in (((40, 50), 5.0), ((64, 64), 11.9), ((70, 45), 24.0), ((33, 90), 30.5)):
        region = ndi.gaussian_filter(rng.random(shape), 3) > 0.56
        np.testing.assert_array_equal(mt._near(_torch(region), radius).numpy(), _near(region, radius))
    empty = np.zeros((30, 30), bool)
    assert not mt._near(_torch(empty), 24.0).numpy().any() and not _near(empty, 24.0).any()


def test_two_host_reads_only(monkeypatch):
    """On a GPU every host read of a device value waits for the queue: the mask may
    read twice (the vacuum decision, the binned vacuum mask) and no more."""
    import torch

    from fastsac.synth import simulate

    img, _ = simulate(size=512, seed=1)
    support_mask_torch(img, pixel_size_nm=0.0293, device="cpu")  # warm the caches
    reads = []
    for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "cpu", "numpy"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            reads.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    res = support_mask_torch(img, pixel_size_nm=0.0293, device="cpu")
    monkeypatch.undo()
    assert res.has_vacuum and 0.05 < res.vacuum_fraction < 0.6
    assert reads.count("cpu") == 2 and len(reads) <= 4, reads
