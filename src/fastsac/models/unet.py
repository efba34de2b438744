"""fastsac's own atom detector network: a compact two-level U-Net heatmap model.

Maps a noise-normalised image (B, 1, H, W) to per-pixel atom-centre logits
(B, 1, H, W); ``sigmoid`` of them is a heatmap trained against Gaussian
bumps (sigma ≈ 1.5 px at 0.0293 nm/px) centred on the atoms.

Layout (widths ``c0, c1, c2``; every conv 3×3, zero padding, ReLU)::

    full res   enc0: c0 c0 ──────────────────────────────► dec0: (c1→c0)+c0 → c0 c0 → 1×1 → 1
    1/2            maxpool → enc1: c1 c1 ──────────► dec1: (c2→c1)+c1 → c1 c1 ─┘ up×2
    1/4                          maxpool → mid: c2 c2 ─┘ up×2

Skips are *added* after a 1×1 projection rather than concatenated, which
halves the cost of the full-resolution decoder convolutions (the 2-core CPU
budget is ~150 ms per 512² frame).

Receptive field: 41×41 px, shifted by up to 3 px depending on the position modulo 4
(halo :attr:`HeatmapUNet.halo` = 23 px bounds it). Input
height and width must be multiples of 4 (:meth:`HeatmapUNet.pad_multiple`);
callers pad (reflect) and crop.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["HeatmapUNet"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class HeatmapUNet(nn.Module):
    """Two-level U-Net producing full-resolution atom-centre logits.

    Parameters
    ----------
    widths : (int, int, int)
        Channels at full, 1/2 and 1/4 resolution.
    """

    #: Pixels of context each output pixel depends on, per side (receptive field 2·halo + 1).
    halo = 23
    #: Input sides must be multiples of this.
    pad_multiple = 4

    def __init__(self, widths: tuple[int, int, int] = (8, 16, 32)):
        super().__init__()
        c0, c1, c2 = (int(w) for w in widths)
        self.widths = (c0, c1, c2)
        self.enc0 = _block(1, c0)
        self.enc1 = _block(c0, c1)
        self.mid = _block(c1, c2)
        self.up1 = nn.Conv2d(c2, c1, 1)
        self.dec1 = _block(c1, c1)
        self.up0 = nn.Conv2d(c1, c0, 1)
        self.dec0 = _block(c0, c0)
        self.head = nn.Conv2d(c0, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"HeatmapUNet input sides must be multiples of 4, got {tuple(x.shape[-2:])}; "
                             "pad the image (reflect) and crop the output")
        e0 = self.enc0(x)
        e1 = self.enc1(F.max_pool2d(e0, 2))
        m = self.mid(F.max_pool2d(e1, 2))
        d1 = self.dec1(F.relu(F.interpolate(self.up1(m), scale_factor=2, mode="nearest") + e1))
        d0 = self.dec0(F.relu(F.interpolate(self.up0(d1), scale_factor=2, mode="nearest") + e0))
        return self.head(d0)
