"""Probabilities of one window from a torch network, plain or with a veto (the fit's validation
and its comparison with the model it started from)."""
from __future__ import annotations

import numpy as np
import torch

from .veto import Vetoed


@torch.no_grad()
def predict(net, img: np.ndarray, dev, multilabel: bool) -> np.ndarray:
    """Probabilities (K, h, w) of one normalised window (padded to a multiple of 32)."""
    c, h, w = img.shape
    x = np.pad(img, ((0, 0), (0, (-h) % 32), (0, (-w) % 32)), mode="reflect")
    z = net(torch.from_numpy(x[None].astype(np.float32)).to(dev))
    if isinstance(net, Vetoed):   # probabilities already
        return z[0, :, :h, :w].float().cpu().numpy()
    p = torch.sigmoid(z) if multilabel or z.shape[1] == 1 else torch.softmax(z, 1)
    return p[0, :, :h, :w].float().cpu().numpy()
