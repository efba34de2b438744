"""The published SAC-CNN window classifier and its exact fully convolutional form.

The published model (``BasicCNN``) classifies one 21×21 window of a
pre-processed image as "atom at the centre" or not::

    conv3×3(1→32) BN ReLU  conv3×3(32→64) BN ReLU  conv3×3(64→128) BN ReLU   (valid: 21→19→17→15)
    AdaptiveAvgPool2d(3)                      (15×15 → 3×3: three 5×5 bins at offsets 0, 5, 10)
    flatten (channel-major: c·9 + 3·i + j)    (1152)
    Linear(1152,128) ReLU  Linear(128,128) ReLU  Linear(128,2)          → softmax, class 1 = atom

It was applied by sliding the window over every pixel (stride 1), which
recomputes the same convolutions ~400× per pixel. :class:`DenseSacCnn` computes
exactly the same stride-1 probability map in one pass:

* the convolutions are applied once to the whole image (valid, BN folded in);
* a 5×5 average pool with stride 1 gives every window's 3×3 pooled bins at once
  (bin (i, j) of the window at top-left (y, x) is the pooled map at
  (y + 5i, x + 5j));
* so ``Linear(1152, 128)`` is a 3×3 convolution with dilation 5 on that map, and
  the other linear layers are 1×1 convolutions.

Receptive field: 21×21 px (halo 10 px). The dense output for an (H, W) input is
(H − 20, W − 20); output pixel (y, x) is the window centred at (y + 10, x + 10).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BasicCNN", "DenseSacCnn", "WINDOW", "HALO", "is_sac_cnn_state_dict"]

#: Edge of the published classification window, px.
WINDOW = 21
#: Half window: pixels lost on each side by the dense map.
HALO = WINDOW // 2
#: Index of the "atom" class in the published output.
ATOM_CLASS = 1

_SAC_KEYS = {"features.0.weight", "features.1.running_var", "features.3.weight", "features.6.weight",
             "fc_layers.0.weight", "fc_layers.2.weight", "fc3.weight"}


def is_sac_cnn_state_dict(sd) -> bool:
    """True when ``sd`` has the parameter names and shapes of the published SAC-CNN."""
    if not isinstance(sd, dict) or not _SAC_KEYS <= set(sd):
        return False
    try:
        return (tuple(sd["features.0.weight"].shape) == (32, 1, 3, 3)
                and tuple(sd["fc_layers.0.weight"].shape) == (128, 1152)
                and tuple(sd["fc3.weight"].shape) == (2, 128))
    except AttributeError:
        return False


class BasicCNN(nn.Module):
    """The published SAC-CNN, module for module (state-dict compatible).

    Input (B, 1, 21, 21) float32 windows of the min-max normalised image;
    output (B, 2) logits (softmax → [p_background, p_atom]).
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(3)
        # Dropout (if the original had any) is the identity in eval mode and owns no weights.
        self.fc_layers = nn.Sequential(nn.Linear(128 * 9, 128), nn.ReLU(inplace=True),
                                       nn.Linear(128, 128), nn.ReLU(inplace=True),
                                       nn.Dropout(dropout))
        self.fc3 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.fc3(self.fc_layers(torch.flatten(x, 1)))


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Conv followed by eval-mode BN as one conv: w' = w·γ/σ, b' = (b − μ)·γ/σ + β."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size)
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale[:, None, None, None])
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        out.bias.copy_((b - bn.running_mean) * scale + bn.bias)
    return out


class DenseSacCnn(nn.Module):
    """Fully convolutional, mathematically equivalent form of :class:`BasicCNN`.

    Maps (B, 1, H, W) → (B, 1, H − 20, W − 20) atom probabilities, identical
    (to float rounding) to classifying every 21×21 window at stride 1.
    Build it with :meth:`from_basic`.
    """

    halo = HALO

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3), nn.Conv2d(64, 128, 3)])
        self.fc1 = nn.Conv2d(128, 128, 3, dilation=5)
        self.fc2 = nn.Conv2d(128, 128, 1)
        self.fc3 = nn.Conv2d(128, 2, 1)

    @classmethod
    def from_basic(cls, net: BasicCNN) -> "DenseSacCnn":
        net = net.eval()
        dense = cls()
        f = net.features
        for k, (ci, bi) in enumerate(((0, 1), (3, 4), (6, 7))):
            dense.convs[k] = _fold_bn(f[ci], f[bi])
        with torch.no_grad():
            # Flatten order is channel-major, so column c·9 + 3i + j of fc1 is tap (i, j) of channel c.
            dense.fc1.weight.copy_(net.fc_layers[0].weight.reshape(128, 128, 3, 3))
            dense.fc1.bias.copy_(net.fc_layers[0].bias)
            dense.fc2.weight.copy_(net.fc_layers[2].weight[:, :, None, None])
            dense.fc2.bias.copy_(net.fc_layers[2].bias)
            dense.fc3.weight.copy_(net.fc3.weight[:, :, None, None])
            dense.fc3.bias.copy_(net.fc3.bias)
        return dense.eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        # 5×5 stride-1 mean = every possible adaptive-pool bin of every window.
        x = F.avg_pool2d(x, 5, stride=1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)[:, ATOM_CLASS:ATOM_CLASS + 1]
