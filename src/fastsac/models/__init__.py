"""Network definitions and checkpoint loading (torch only; no image processing here).

* :class:`BasicCNN` / :class:`DenseSacCnn` — the published SAC-CNN window
  classifier and its exact one-pass fully convolutional form (halo 10 px).
* :class:`HeatmapUNet` — fastsac's compact atom-centre heatmap network (halo 23 px).
* :func:`load_checkpoint` — recognises either kind of checkpoint by its keys.
"""

from __future__ import annotations

from .checkpoint import (FASTSAC_FORMAT, Checkpoint, build_heatmap_model, load_checkpoint,
                         save_checkpoint)
from .sac_cnn import BasicCNN, DenseSacCnn, is_sac_cnn_state_dict
from .unet import HeatmapUNet

__all__ = ["BasicCNN", "DenseSacCnn", "HeatmapUNet", "Checkpoint", "load_checkpoint",
           "save_checkpoint", "build_heatmap_model", "is_sac_cnn_state_dict", "FASTSAC_FORMAT"]
