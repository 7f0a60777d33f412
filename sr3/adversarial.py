"""An adversarial term for a diffusion refiner: a conditional patch discriminator and hinge losses.

Why: trained with L1 alone, a few-step refiner's clean-image estimates stay near the
conditional mean (README, "Training the refiner longer did not add realism").  Denoising
Diffusion GANs (Xiao et al., ICLR 2022) and Adversarial Diffusion Distillation (Sauer et
al. 2023) add a discriminator on the denoiser's estimate of the clean image, so that a
sampler taking few large steps lands on sharp, plausible images rather than on their
average.  Here the discriminator judges the estimated HR image x0_hat(x_t, gamma) against
the real HR crop, both seen together with the anchor image the refiner is conditioned on
(the predictor's output), so it judges detail given the content, not the content itself.

Losses are the hinge form (Lim & Ye 2017; Miyato et al. 2018, with spectral normalisation
in every discriminator layer to keep it Lipschitz and training stable on small batches):

    L_D = E[relu(1 - D(x_real | a))] + E[relu(1 + D(x_fake | a))]
    L_G = -E[D(x_fake | a)]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """A PatchGAN (Isola et al. 2017): 4x4 convolutions (three of stride 2) and a 3x3 head -> one logit
    per 62 px patch, every 8 px.

    image_channels: channels of the image judged (3 for RGB).
    cond_channels: channels of the conditioning image concatenated to it (the anchor; 0 for none).
    width: channels of the first layer (doubling twice); 32-64 suits 128 px crops on a CPU.
    """

    def __init__(self, image_channels: int = 3, cond_channels: int = 3, width: int = 32):
        super().__init__()
        chans = [image_channels + cond_channels, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for k in range(4):
            stride = 2 if k < 3 else 1
            layers += [spectral_norm(nn.Conv2d(chans[k], chans[k + 1], 4, stride, 1)), nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(chans[-1], 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """image, cond: [B, C, H, W] in [-1, 1] -> [B, 1, H/8 - 1, W/8 - 1] logits (real > 0)."""
        x = image if cond is None else torch.cat([image, cond], dim=1)
        return self.net(x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: push real logits above +1 and fake ones below -1."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator (the refiner): raise the discriminator's logits on its estimates."""
    return -fake_logits.mean()
