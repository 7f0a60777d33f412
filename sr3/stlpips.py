"""ST-LPIPS: the shift-tolerant learned perceptual distance (Ghildyal & Liu, ECCV 2022).

LPIPS (Zhang et al. 2018) compares unit-normalised deep features of two images through
learned per-channel weights; it agrees with human judgements of similarity far better
than PSNR/SSIM, which is why SR papers report it for outputs with invented detail.  Plain
LPIPS, like L2, punishes a one-pixel shift almost as hard as a real distortion; ST-LPIPS
makes the backbone tolerant to small shifts (stride-1 first layers, anti-aliased "blur
pool" downsampling with reflection padding, Zhang 2019), so a sample whose texture is
a pixel off is not scored as wrong.

The weights are the ones the ``stlpips-pytorch`` 0.0.2 package ships
(``weights/vST0.0/{alex,vgg}_shift_tolerant.pth``, BSD-2-Clause, backbone and linear
heads together).  That package's code imports IPython, torchsummary and torchvision
without declaring them, so the two networks are defined here (same layer order, so the
state-dict keys match) and only the weight files are read, with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .packaged import package_file

PACKAGE = "stlpips-pytorch"
NETS = ("alex", "vgg")
FEATURE_EPS = 1e-10
"""Added to the channel norm before dividing (LPIPS' ``normalize_tensor``)."""
INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
"""LPIPS v0.1's input scaling layer: ``(x - shift) / scale`` on [-1, 1] images, roughly the
ImageNet normalisation the backbones were trained with (also stored in the weight files)."""


class BlurPool(nn.Module):
    """Anti-aliased 2x downsampling (Zhang 2019): reflection pad 2, [1 2 1]^T[1 2 1]/16 blur, stride 2.

    ST-LPIPS uses the "pad more" variant (2 px on each side for a 3-tap filter), which is
    what makes the features shift tolerant near borders too.  ``channels``: input channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        filt = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _alex_layers() -> list[nn.Module]:
    # stlpips_pytorch.invariant_networks.alexnet(variant="shift_tolerant"): AlexNet with stride-1
    # first convolution and every stride replaced by a blur pool after the non-linearity's input.
    return [
        nn.Conv2d(3, 64, 11, stride=1, padding=2), BlurPool(64), nn.ReLU(),
        nn.MaxPool2d(3, stride=1), BlurPool(64), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=1), BlurPool(192), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]


def _vgg_layers() -> list[nn.Module]:
    # VGG-16 "D" with each 2x2/2 max pool replaced by a 2x2/1 max pool and a blur pool.
    layers: list[nn.Module] = []
    channels = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers += [nn.MaxPool2d(2, stride=1), BlurPool(channels)]
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    return layers


MIN_SIDE = {"alex": 21, "vgg": 18}
"""Smallest image side (px) each network accepts: the deepest blur pool's reflection padding needs 3 px."""

ARCHITECTURES = {
    # name: (layers, index where each of the 5 compared feature maps ends, channels of each)
    "alex": (_alex_layers, (3, 7, 11, 13, 15), (64, 192, 384, 256, 256)),
    "vgg": (_vgg_layers, (4, 10, 18, 26, 34), (64, 128, 256, 512, 512)),
}


class _Trunk(nn.Module):
    """The backbone cut into five slices; each slice's output is one compared feature map."""

    def __init__(self, net: str):
        super().__init__()
        make, ends, _ = ARCHITECTURES[net]
        layers = make()
        start = 0
        for i, end in enumerate(ends):
            part = nn.Sequential()
            for j in range(start, end):
                part.add_module(str(j), layers[j])  # keeps the original indices: state-dict keys match
            self.add_module(f"slice{i + 1}", part)
            start = end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for part in self.children():
            x = part(x)
            feats.append(x)
        return feats


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(INPUT_SCALE).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.shift) / self.scale


class _Linear(nn.Module):
    """A 1x1 convolution without bias weighting the squared feature differences (key ``model.1``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential()
        self.model.add_module("1", nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class STLPIPS(nn.Module):
    """ST-LPIPS distance between two batches of RGB images in [0, 1]: ``d(x, y) -> [B]``; 0 for identical images.

    ``net``: ``"alex"`` (the variant the authors recommend as a metric) or ``"vgg"``
    (closer to a perceptual training loss).  Images must be at least :data:`MIN_SIDE`
    px on each side.
    Weights start random: load them with :func:`load_stlpips`.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in ARCHITECTURES:
            raise ValueError(f"unknown ST-LPIPS network {net!r}; choose from {', '.join(NETS)}")
        self.net_name = net
        self.scaling_layer = _Scaling()
        self.net = _Trunk(net)
        for i, c in enumerate(ARCHITECTURES[net][2]):
            self.add_module(f"lin{i}", _Linear(c))
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x, y = x[None], y[None]
        if x.shape != y.shape:
            raise ValueError(f"ST-LPIPS needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.net(self.scaling_layer(x.float() * 2 - 1))
        fy = self.net(self.scaling_layer(y.float() * 2 - 1))
        total = torch.zeros(x.shape[0], device=x.device)
        for i, (a, b) in enumerate(zip(fx, fy)):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + FEATURE_EPS)
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + FEATURE_EPS)
            total = total + getattr(self, f"lin{i}")((a - b).pow(2)).mean(dim=(1, 2, 3))
        return total


def packaged_weights(net: str) -> Path:
    """Path of the ``stlpips-pytorch`` package's weight file for ``net`` (the package's code is not imported)."""
    return package_file("stlpips_pytorch", f"weights/vST0.0/{net}_shift_tolerant.pth", PACKAGE, "0.0.2")


def load_stlpips(net: str = "alex", weights: str | Path | None = None) -> STLPIPS:
    """ST-LPIPS with trained weights: ``weights`` (a ``*_shift_tolerant.pth`` state dict) or the packaged file.

    The file is read with ``torch.load(weights_only=True)`` (tensors only, no pickled code)
    and must match the architecture exactly.
    """
    model = STLPIPS(net)
    path = Path(weights) if weights is not None else packaged_weights(net)
    if not path.is_file():
        raise UserError(f"{path}: no such ST-LPIPS weight file; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise UserError(f"{path}: not an ST-LPIPS {net} state dict ({str(e).splitlines()[0]})") from None
    return model.eval()
