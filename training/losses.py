"""Losses for binary (1 logit channel), multiclass (K channels) and multilabel segmentation.

Pixels labelled 255 are ignored.  ``build("focal+dice")`` sums the named terms (weights
``"focal:1+dice:0.5"``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = 255


def _binary_parts(logits, target):
    valid = (target != IGNORE).float()
    t = (target == 1).float() if logits.shape[1] == 1 else None
    return logits[:, 0], t, valid


class BCELoss(nn.Module):
    def __init__(self, pos_weight: float = 1.0):
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits, target):
        if logits.shape[1] > 1:
            return F.cross_entropy(logits, target, ignore_index=IGNORE)
        z, t, v = _binary_parts(logits, target)
        pw = torch.tensor(self.pos_weight, device=z.device)
        l = F.binary_cross_entropy_with_logits(z, t, reduction="none", pos_weight=pw)
        return (l * v).sum() / v.sum().clamp(min=1)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al.): (1 - p_t)^gamma * CE, alpha-balanced for the positive class."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits, target):
        if logits.shape[1] > 1:
            valid = (target != IGNORE)
            t = target.clamp(max=logits.shape[1] - 1)
            logp = F.log_softmax(logits, 1).gather(1, t[:, None])[:, 0]
            l = -((1 - logp.exp()) ** self.gamma) * logp
            return (l * valid).sum() / valid.sum().clamp(min=1)
        z, t, v = _binary_parts(logits, target)
        ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
        p = torch.sigmoid(z)
        pt = p * t + (1 - p) * (1 - t)
        a = self.alpha * t + (1 - self.alpha) * (1 - t)
        l = 2.0 * a * (1 - pt) ** self.gamma * ce   # x2: alpha=0.5 leaves the scale of CE
        return (l * v).sum() / v.sum().clamp(min=1)


class DiceLoss(nn.Module):
    """Soft Dice over the whole batch (positive class; mean over classes for multiclass)."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits, target):
        v = (target != IGNORE).float()
        if logits.shape[1] == 1:
            p = torch.sigmoid(logits[:, 0]) * v
            t = (target == 1).float() * v
            inter = (p * t).sum()
            return 1 - (2 * inter + self.smooth) / (p.sum() + t.sum() + self.smooth)
        k = logits.shape[1]
        p = torch.softmax(logits, 1) * v[:, None]
        t = F.one_hot(target.clamp(max=k - 1), k).permute(0, 3, 1, 2).float() * v[:, None]
        inter = (p * t).sum((0, 2, 3))
        d = (2 * inter + self.smooth) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)) + self.smooth)
        return 1 - d[1:].mean()


class MultiLabelLoss(nn.Module):
    """A multilabel model's loss: binary cross-entropy per label channel plus half a soft Dice per
    channel; ``target`` (N, K, H, W) holds 1 (label present), 0 (absent) or IGNORE."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits, target):
        v = (target != IGNORE).float()
        t = (target == 1).float()
        bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        loss = (bce * v).sum() / v.sum().clamp(min=1)
        p, t = torch.sigmoid(logits) * v, t * v
        inter = (p * t).sum((0, 2, 3))
        d = (2 * inter + self.smooth) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)) + self.smooth)
        return loss + 0.5 * (1 - d.mean())


class Combo(nn.Module):
    def __init__(self, terms):
        super().__init__()
        self.terms = nn.ModuleList([t for t, _ in terms])
        self.weights = [w for _, w in terms]

    def forward(self, logits, target):
        return sum(w * t(logits, target) for t, w in zip(self.terms, self.weights))


def build(spec: str) -> nn.Module:
    terms = []
    for part in spec.split("+"):
        name, _, w = part.partition(":")
        name = name.strip().lower()
        cls = {"bce": BCELoss, "ce": BCELoss, "focal": FocalLoss, "dice": DiceLoss}.get(name)
        if cls is None:
            raise ValueError("unknown loss %r (bce, focal, dice, combined with +)" % name)
        terms.append((cls(), float(w) if w else 1.0))
    return terms[0][0] if len(terms) == 1 and terms[0][1] == 1.0 else Combo(terms)
