"""A machine confusion rate: a classifier two-sample test of real images against a method's outputs.

SR3's headline result is a human 2-alternative forced-choice study: raters see the HR
image and a model output and pick the one they think the camera took; the *confusion
rate* is how often they pick the model output (50% = indistinguishable; SR3 reached
about 40% at 16x16 -> 128x128 faces, regression about 17% on ImageNet 64 -> 256).

No people are asked here.  Following Lopez-Paz & Oquab (ICLR 2017, "Revisiting
classifier two-sample tests"), a small convolutional discriminator is trained to tell
patches of real HR images from patches of a method's outputs, on part of the images,
and tested on the rest.  ``machine confusion = 1 - test accuracy``: 50% means the
discriminator cannot tell them apart (the two-sample test finds no difference), 0% means
it always can.  It is a *proxy* with its own biases (it sees pixels, not meaning; it is
very good at spotting blur and periodic artefacts a person may forgive, and a model trained
against a discriminator can fool it with grain a person sees at once: README, the adversarial
refiner), never the human study; the study itself lives in ``sr3 study``.

Images are split into folds; each fold is tested by a discriminator trained on the
others, so every image is tested once and the discriminator never sees a test image's
patches.  The confidence interval is a bootstrap over images (patches of one image are
not independent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .inception import image_patches
from .metrics import bootstrap_ci


@dataclass(frozen=True)
class ConfusionConfig:
    """Settings of the two-sample test.

    ``patch``: side (px) of the non-overlapping patches the discriminator sees (>= 8);
    ``folds``: image folds (>= 2; each is tested once); ``train_patches``: at most this many
    patches per image and class are drawn (seeded) for training, which bounds the CPU cost
    (testing uses every patch); ``epochs``, ``batch_size``, ``lr``: Adam training of the
    discriminator per fold; ``width``: channels of its first layer; ``seed``: fold
    assignment, patch draw, initialisation, batch order and bootstrap.
    """

    patch: int = 32
    folds: int = 2
    train_patches: int = 24
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 16
    seed: int = 0


@dataclass(frozen=True)
class ConfusionResult:
    """Machine confusion (1 - held-out accuracy) with a 95% bootstrap CI over images, and what it was measured on."""

    machine_confusion: float
    ci_low: float
    ci_high: float
    accuracy: float
    n_images: int
    n_test_patches: int
    patch: int
    folds: int
    definition: str = ("1 - held-out accuracy of a small CNN trained to tell real HR patches from this method's "
                       "output patches (classifier two-sample test, Lopez-Paz & Oquab 2017); 50% = cannot tell "
                       "them apart. A machine proxy for, not a measurement of, SR3's human 2AFC confusion rate.")

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    """Three 3x3 convolutions (stride 1, 2, 2) with LeakyReLU, then the spatial mean and std of each channel -> a logit.

    Mean and standard deviation pooling let it judge both colour/brightness and texture
    energy (blur lowers the latter) without depending on where in the patch detail lies.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, 2 * width, 3, 2, 1),
                                    nn.Conv2d(2 * width, 4 * width, 3, 2, 1)])
        self.head = nn.Linear(8 * width, 1)

    def forward(self, x):
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.head(torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)).squeeze(1)


def _patches(images: Sequence[torch.Tensor], size: int) -> list[torch.Tensor]:
    return [image_patches(img.float() * 2 - 1, size, size) for img in images]


def _train(real: torch.Tensor, fake: torch.Tensor, cfg: ConfusionConfig, seed: int) -> PatchDiscriminator:
    x = torch.cat([real, fake])
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    torch.manual_seed(seed)
    model = PatchDiscriminator(cfg.width)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def machine_confusion(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor],
                      cfg: ConfusionConfig = ConfusionConfig()) -> ConfusionResult:
    """Machine confusion rate of ``fake`` images against ``real`` ones (lists of ``[3, H, W]`` in [0, 1]).

    ``real[i]`` and ``fake[i]`` should show the same scene (the HR image and the method's
    output for it), so that folds hold whole scenes.  Needs at least ``cfg.folds`` images
    with at least one patch each.
    """
    if len(real) != len(fake):
        raise ValueError(f"need one output per real image (have {len(real)} real, {len(fake)} outputs)")
    if cfg.folds < 2 or cfg.patch < 8:
        raise ValueError(f"need folds >= 2 and patch >= 8, got {cfg.folds} and {cfg.patch}")
    rp, fp = _patches(real, cfg.patch), _patches(fake, cfg.patch)
    keep = [i for i in range(len(rp)) if len(rp[i]) and len(rp[i]) == len(fp[i])]
    if len(keep) < cfg.folds:
        raise ValueError(f"need at least {cfg.folds} image pairs of the same size with a {cfg.patch} px patch, "
                         f"have {len(keep)}")
    threads = torch.get_num_threads()
    # The discriminator's convolutions are tiny: one thread trains it ~5x faster than two on a
    # shared 2-core machine (thread hand-offs dominate); the process setting is restored below.
    torch.set_num_threads(1)
    try:
        result = _cross_fit(rp, fp, keep, cfg)
    finally:
        torch.set_num_threads(threads)
    return result


def _cross_fit(rp: list[torch.Tensor], fp: list[torch.Tensor], keep: list[int], cfg: ConfusionConfig
               ) -> ConfusionResult:
    with torch.random.fork_rng(devices=[]):
        order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        fold_of = {keep[j]: k % cfg.folds for k, j in enumerate(order)}
        per_image: dict[int, float] = {}
        n_test = 0
        for fold in range(cfg.folds):
            train = [i for i in keep if fold_of[i] != fold]
            test = [i for i in keep if fold_of[i] == fold]
            g = torch.Generator().manual_seed(cfg.seed * 1000 + fold)
            pick = {i: torch.randperm(len(rp[i]), generator=g)[:cfg.train_patches] for i in train}
            model = _train(torch.cat([rp[i][pick[i]] for i in train]), torch.cat([fp[i][pick[i]] for i in train]),
                           cfg, cfg.seed * 1000 + fold)
            with torch.no_grad():
                for i in test:
                    correct = torch.cat([model(rp[i]) > 0, model(fp[i]) <= 0]).float()
                    per_image[i] = float(correct.mean())
                    n_test += len(correct)
    acc, lo, hi = bootstrap_ci([per_image[i] for i in keep], seed=cfg.seed)
    return ConfusionResult(machine_confusion=1 - acc, ci_low=1 - hi, ci_high=1 - lo, accuracy=acc,
                           n_images=len(keep), n_test_patches=n_test, patch=cfg.patch, folds=cfg.folds)
