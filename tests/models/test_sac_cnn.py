"""The published SAC-CNN: loading, and the one-pass dense map equals the sliding window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsac.errors import FastsacInputError
from fastsac.models import BasicCNN, DenseSacCnn, HeatmapUNet, load_checkpoint, save_checkpoint
from fastsac.models.sac_cnn import HALO


@pytest.fixture(scope="module")
def random_basic():
    torch.manual_seed(0)
    net = BasicCNN()
    # Non-trivial BN statistics so that folding is really exercised.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_dense_equals_windows_random_weights(random_basic):
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.random((1, 1, 40, 37), dtype=np.float32))
    dense = DenseSacCnn.from_basic(random_basic)
    with torch.inference_mode():
        d = torch.softmax(dense.logits(img), 1)[0]
        assert d.shape == (2, 40 - 20, 37 - 20)
        win = img.unfold(2, 21, 1).unfold(3, 21, 1)  # (1,1,20,17,21,21)
        batch = win.reshape(-1, 1, 21, 21)
        ref = torch.softmax(random_basic(batch), 1).T.reshape(2, 20, 17)
    assert torch.allclose(d, ref, atol=1e-5)


def test_dense_output_shape_and_halo(random_basic):
    dense = DenseSacCnn.from_basic(random_basic)
    with torch.inference_mode():
        y = dense(torch.zeros(2, 1, 64, 50))
    assert y.shape == (2, 1, 64 - 2 * HALO, 50 - 2 * HALO)
    assert ((y >= 0) & (y <= 1)).all()


def test_load_published_checkpoint(sac_cnn_ckpt):
    ck = load_checkpoint(sac_cnn_ckpt)
    assert ck.kind == "sac_cnn"
    assert isinstance(ck.model, BasicCNN)
    assert not ck.model.training


def test_fastsac_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = HeatmapUNet((4, 8, 8))
    p = save_checkpoint(tmp_path / "m.pt", net, arch={"name": "heatmap_unet", "widths": [4, 8, 8]},
                        detector={"threshold": 0.3}, meta={"note": "test"})
    ck = load_checkpoint(p)
    assert ck.kind == "fastsac" and ck.detector["threshold"] == 0.3
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(ck.model(x), net.eval()(x))


def test_unrecognised_checkpoints_name_the_file(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, bad)
    with pytest.raises(FastsacInputError, match="other.pt.*not a recognised"):
        load_checkpoint(bad)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FastsacInputError, match="junk.ckpt"):
        load_checkpoint(junk)
    with pytest.raises(FastsacInputError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unet_rejects_sizes_not_multiple_of_4():
    with pytest.raises(ValueError, match="multiples of 4"):
        HeatmapUNet()(torch.zeros(1, 1, 30, 32))


def test_unet_receptive_field_within_halo():
    torch.manual_seed(0)
    net = HeatmapUNet().eval()
    reach = 0
    for c in (48, 49, 50, 51):  # every alignment with respect to the two 2x poolings
        x = torch.zeros(1, 1, 100, 100, requires_grad=True)
        net(x)[0, 0, c, c].backward()
        rows, cols = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
        reach = max(reach, c - rows.min(), rows.max() - c, c - cols.min(), cols.max() - c)
    assert reach == HeatmapUNet.halo
