"""Learning where not to flag, without forgetting where to: the veto of a fine-tuned binary model.

A user's corrections are mostly deletions: ground the model flags and should not (beaches, bare
fields, haze in a region it never saw).  Trained on those alone, a network learns "nothing is
tailings" and loses its other sites (measured: ``corrections_check``).  Instead the model gets a
veto: a logistic classifier on the encoder's deepest features (stride 32) and their 7 x 7 mean
(the surroundings), standardised and projected on the principal axes of the training data's
locations (plus the distance from them), that separates the ground the user says is background
from the model's own training locations (``replay``: a sample of them stored in the model's
metadata, with how much tailings each holds) and from the user's own tailings.  The network's
probability becomes ``p * (1 - v)``.  The veto is calibrated so that it suppresses at most
``KEEP_Q`` % of the training locations that hold tailings.  The encoder and the network are
unchanged, so what the model found before it still finds, except where the ground looks like
what the user deleted.

Everything is in the graph: the exported model is one ONNX file like any other.
"""
from __future__ import annotations

import base64
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .engine import unpack   # (one reading of the metadata's float16 arrays)

CONTEXT = 7          # the surroundings: mean of 7 x 7 stride-32 locations (2.2 km at 10 m)
COMPONENTS = 48
SAMPLES = 3000
KEEP_Q = 2.0         # at most this share (%) of the training locations holding tailings is vetoed
POSITIVE_LOCATION = 0.05   # a location "holds tailings" from this share of its pixels


def pack(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.float16).tobytes()).decode("ascii")




def context_features(f32: torch.Tensor) -> torch.Tensor:
    """(N, 2C, h, w): the deepest features and their surroundings' mean."""
    ctx = F.avg_pool2d(f32, CONTEXT, stride=1, padding=CONTEXT // 2, count_include_pad=False)
    return torch.cat([f32, ctx], 1)


@torch.no_grad()
def locations(net, img: np.ndarray) -> np.ndarray:
    """(h*w, 2C) location features of a normalised image (C, H, W), padded to a multiple of 32."""
    c, h, w = img.shape
    x = np.pad(img, ((0, 0), (0, (-h) % 32), (0, (-w) % 32)), mode="reflect")
    f = context_features(net.encoder(torch.from_numpy(x[None].astype(np.float32)))[4])[0]
    return f.reshape(f.shape[0], -1).T.numpy()


def location_shares(mask: np.ndarray, hw: Tuple[int, int], value: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Per stride-32 location: the share of its known pixels that are ``value``, and the share known
    (labels of 255 are unknown)."""
    h, w = hw
    m = np.full((h * 32, w * 32), 255, np.uint8)
    m[:mask.shape[0], :mask.shape[1]] = mask
    m = m.reshape(h, 32, w, 32)
    known = (m != 255).mean(axis=(1, 3))
    pos = ((m == value) & (m != 255)).sum(axis=(1, 3)) / np.maximum(1, (m != 255).sum(axis=(1, 3)))
    return pos.ravel(), known.ravel()


def replay_stats(vectors: np.ndarray, positive: np.ndarray, seed: int = 0) -> Dict:
    """The ``replay`` metadata from training location features (n, 2C) and their tailings shares."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(vectors), min(SAMPLES, len(vectors)), replace=False)
    s, pf = vectors[idx], positive[idx]
    mu, sd = s.mean(0), s.std(0) + 1e-3
    z = (s - mu) / sd
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    comps = vt[:COMPONENTS]
    t = z @ comps.T
    r = np.linalg.norm(z - t @ comps, axis=1, keepdims=True) / np.sqrt(z.shape[1])
    proj = np.concatenate([t, r], 1)
    return {"level": "encoder stride 32 + 7 x 7 mean", "channels": int(s.shape[1]), "components_n": int(len(comps)),
            "samples_n": int(len(s)), "mean": pack(mu), "std": pack(sd), "components": pack(comps),
            "samples": pack(proj), "positive_share": pack(pf)}


class Replay:
    """The stored training locations (``replay_stats``), read back."""

    def __init__(self, d: Dict):
        c, k, n = int(d["channels"]), int(d["components_n"]), int(d["samples_n"])
        self.mu, self.sd = unpack(d["mean"], (c,)), unpack(d["std"], (c,))
        self.comps = unpack(d["components"], (k, c))
        self.samples = unpack(d["samples"], (n, k + 1))
        self.positive = unpack(d["positive_share"], (n,))

    def project(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mu) / self.sd
        t = z @ self.comps.T
        r = np.linalg.norm(z - t @ self.comps, axis=1, keepdims=True) / np.sqrt(z.shape[1])
        return np.concatenate([t, r], 1)


def fit_veto(replay: Replay, background: np.ndarray, keep: Optional[np.ndarray] = None,
             steps: int = 500, l2: float = 0.01, keep_q: float = KEEP_Q) -> Dict:
    """A logistic veto: ``background`` (n, K + 1) projected locations of the user's background (veto
    them) against the stored training locations and ``keep`` (location features of the user's own
    tailings).  Returns its parameters in the projected space, the bias calibrated (``keep_q``: at most
    this share (%) of the training locations holding tailings vetoed)."""
    a = replay.samples
    if keep is not None and len(keep):
        a = np.concatenate([a, replay.project(keep)])
    b = background
    m, s = a.mean(0), a.std(0) + 1e-3
    A, B = torch.from_numpy((a - m) / s).float(), torch.from_numpy((b - m) / s).float()
    w = torch.zeros(A.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=0.05)
    for _ in range(steps):
        loss = (F.binary_cross_entropy_with_logits(A @ w + bias, torch.zeros(len(A)))
                + F.binary_cross_entropy_with_logits(B @ w + bias, torch.ones(len(B))) + l2 * (w * w).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    w_, b_ = w.detach().numpy(), float(bias.detach())
    logits = ((replay.samples - m) / s) @ w_ + b_
    pos = replay.positive >= POSITIVE_LOCATION
    shift = 0.0
    if pos.any():
        shift = min(0.0, -float(np.percentile(logits[pos], 100 - keep_q)))
    bg_vetoed = float((((b - m) / s) @ w_ + b_ + shift >= 0).mean())
    return {"w": (w_ / s).astype(np.float32), "b": float(b_ + shift - (m / s) @ w_), "shift": shift,
            "background_vetoed": bg_vetoed,
            "training_positive_vetoed": float((logits[pos] + shift >= 0).mean()) if pos.any() else 0.0}


class Vetoed(nn.Module):
    """An EffUNet whose probability is ``p * (1 - v)``, ``v`` the veto (see the module's text): all
    convolutions, so that ``from_onnx`` reads it back like the network."""

    def __init__(self, net, channels: int, components: int):
        super().__init__()
        self.net = net
        self.norm = nn.Conv2d(channels, channels, 1, groups=channels)         # (x - mu) / sd
        self.project = nn.Conv2d(channels, components, 1, bias=False)         # on the principal axes
        self.back = nn.Conv2d(components, channels, 1, bias=False)            # and back: the residual
        self.logit = nn.Conv2d(components + 1, 1, 1)
        self.channels = channels

    def set(self, replay: Replay, veto: Dict) -> None:
        with torch.no_grad():
            self.norm.weight.copy_(torch.from_numpy(1.0 / replay.sd).reshape(-1, 1, 1, 1))
            self.norm.bias.copy_(torch.from_numpy(-replay.mu / replay.sd))
            self.project.weight.copy_(torch.from_numpy(replay.comps)[:, :, None, None])
            self.back.weight.copy_(torch.from_numpy(replay.comps.T.copy())[:, :, None, None])
            self.logit.weight.copy_(torch.from_numpy(veto["w"])[None, :, None, None])
            self.logit.bias.fill_(veto["b"])

    def veto(self, f32):
        z = self.norm(context_features(f32))
        t = self.project(z)
        r = torch.sqrt(((z - self.back(t)) ** 2).sum(1, keepdim=True) / self.channels)
        return torch.sigmoid(self.logit(torch.cat([t, r], 1)))

    def forward(self, x):
        feats = self.net.encoder(x)
        p = torch.sigmoid(self.net.decode(feats))
        v = F.interpolate(self.veto(feats[4]), size=p.shape[-2:], mode="bilinear", align_corners=False)
        return p * (1 - v)


def user_locations(net, scenes, limit: int = SAMPLES) -> Tuple[np.ndarray, np.ndarray]:
    """Location features of the user's ground, training blocks only: ``(background, tailings)``
    -- locations mostly known and holding no label, and locations holding labels."""
    from . import labels as L
    bg, pos = [], []
    step = 512
    for sc in scenes:
        for y in range(0, sc.height, step):
            for x in range(0, sc.width, step):
                img, lab = sc.read(x, y, step)
                lab = lab[0].copy()
                lab[sc.in_val(x, y, step)] = L.IGNORE
                if (lab == L.IGNORE).all():
                    continue
                v = locations(net, img)
                hw = (step // 32, step // 32)
                share, known = location_shares(lab, hw)
                bg.append(v[(known >= 0.5) & (share == 0)])
                pos.append(v[share >= POSITIVE_LOCATION])
    rng = np.random.default_rng(0)

    def cap(parts):
        a = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        return a[rng.choice(len(a), limit, replace=False)] if len(a) > limit else a
    return cap(bg), cap(pos)


def background_samples(replay: "Replay", background: np.ndarray, prior: Optional[str], seed: int = 0) -> Tuple[np.ndarray, str]:
    """The user's background locations (projected), with those of earlier corrections (``prior``,
    from the model's metadata): what the veto is fitted on, and what the new model carries on."""
    b = replay.project(background) if len(background) else np.zeros((0, replay.samples.shape[1]), np.float32)
    if prior:
        old = unpack(prior, (-1, replay.samples.shape[1]))
        b = np.concatenate([old, b])
    if len(b) > SAMPLES:
        b = b[np.random.default_rng(seed).choice(len(b), SAMPLES, replace=False)]
    return b, pack(b)
