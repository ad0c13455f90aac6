"""The network on a batch of tiles: onnxruntime's session run once per view (test-time
augmentation) and scale, its outputs activated, mapped back, averaged and checked."""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np

from ..errors import Cancelled, ModelError, TailingsError, first_line
from ..model.metadata import model_label
from ..tiling import rescale, tta_views

CancelFn = Callable[[], bool]


def activate(out: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-out))
    if activation == "softmax":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return out


def join_heads(heads, n: int) -> np.ndarray:
    """The network's outputs as one (n, K, T, T) array: an (N, T, T) output is one channel, and
    the channels of several outputs (heads) follow each other in output order."""
    arrays = [h[:n, None] if h.ndim == 3 else h[:n] for h in heads]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)


class TileNetwork:
    """The network on a batch of tiles: one pass, or the views of test-time augmentation at each
    scale, each mapped back and averaged; probabilities (n, K, T, T)."""

    def __init__(self, p, session, channels: int, cancel: CancelFn):
        self.p, self.sess, self.K, self.cancel = p, session.ort, channels, cancel
        self.input_name = session.input_name
        self.fixed_batch = session.fixed_batch is not None
        self.batch_size = session.fixed_batch or p.batch   # tiles per call
        self.views = tta_views(p.tta)
        self.activation = p.info.activation
        self.with_features = bool(session.extra_outputs)
        self.heads = session.n_outputs
        self.features: Optional[np.ndarray] = None   # (n, C): the encoder's tile means, first pass
        self.maps: Optional[List[np.ndarray]] = None  # the extra outputs themselves (n, C, h, w), first pass

    def __call__(self, batch: np.ndarray, n: int) -> np.ndarray:
        feed = batch if self.fixed_batch else batch[:n]
        out = None
        self.features = self.maps = None
        for s in self.p.scales:
            fs = feed if s == 1.0 else np.ascontiguousarray(rescale(feed, s))
            for fwd, inv in self.views:
                if out is not None and self.cancel():  # cancel between passes too
                    raise Cancelled("cancelled")
                o = inv(activate(self._run(np.ascontiguousarray(fwd(fs)), n, features=s == 1.0 and out is None),
                                 self.activation))
                if s != 1.0:
                    o = rescale(o, s, up=True)
                if out is None:  # an array of our own (sess.run and rescale return new ones)
                    out = o
                else:
                    out += o
        passes = len(self.views) * len(self.p.scales)
        if passes > 1:
            out *= 1.0 / passes
        return out

    def _run(self, x: np.ndarray, n: int, features: bool = False) -> np.ndarray:
        ts = x.shape[-1]
        try:
            outs = self.sess.run(None, {self.input_name: x})
            o = join_heads(outs[:self.heads], n)
            if features and self.with_features:
                from .ood import tile_means
                self.maps = [np.asarray(f[:n], np.float32) for f in outs[self.heads:]]
                self.features = tile_means(self.maps[0])
        except Exception as e:  # onnxruntime's own exception types
            raise TailingsError("the network failed on tiles of %d x %d px: %s" % (ts, ts, first_line(e))) from None
        if o.shape[1] != self.K or o.shape[2] != ts or o.shape[3] != ts:
            raise TailingsError("the network returned shape %s for tiles of %d x %d; expected (N, %d, %d, %d)"
                                % (o.shape, ts, ts, self.K, ts, ts))
        if not np.isfinite(o).all():   # (a NaN map is "no tailings" everywhere: never silently; ~0.05 % of a batch)
            raise ModelError("model %s returned NaN or infinite values on tiles of %d x %d px (an fp16 export that "
                             "overflows does this): its map would mean nothing; export the model again (float32)"
                             % (model_label(self.p.info), ts, ts))
        return o.astype(np.float32, copy=False)
