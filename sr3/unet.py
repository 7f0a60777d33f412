"""The SR3 U-Net (Saharia et al. 2021, Sec. 3; architecture of Ho et al. 2020 with
BigGAN residual blocks, Brock et al. 2019).

Inputs: the noisy image y~ concatenated on the channel axis with the
bicubic-upsampled low-resolution image x (SR3's conditioning, Fig. 2), the noise
level sqrt(gamma) (continuous, embedded with sinusoids + MLP and injected into
every block as a GroupNorm scale/shift), and optionally a class label and a
conditioning-augmentation level (CDM, Ho et al. 2021) that add to the same
embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import UNetConfig

INV_SQRT2 = 1 / math.sqrt(2)


def sinusoidal_embedding(x: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer-style sinusoids of a continuous scalar per example, [B] -> [B, dim].

    ``scale`` stretches inputs in [0, 1] (such as sqrt(gamma)) over the frequency range
    that DDPM's integer timesteps used.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = scale * x.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``
    (skip concatenations give channel counts like 48 that 32 does not divide)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """BigGAN-style residual block: resampling happens inside the block, and the sum
    with the skip path is scaled by 1/sqrt(2) (SR3 App. A)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float,
                 resample: str | None = None):
        super().__init__()
        self.resample = resample  # None, "up" or "down"
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)  # scale and shift for norm2
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h = self.conv1(self._resample(h))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return (h + self.skip(self._resample(x))) * INV_SQRT2


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a feature map (residual)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: list[ResBlock], attentions: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        ch = c.base_channels
        emb_dim = 4 * ch
        self.emb_dim = emb_dim
        self.noise_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # one more row for the "no class" label of classifier-free guidance (index num_classes)
        self.class_emb = nn.Embedding(c.num_classes + c.null_class, emb_dim) if c.num_classes > 0 else None
        self.aug_mlp = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                        if c.aug_level_conditioning else None)

        def res(cin, cout, resample=None):
            return ResBlock(cin, cout, emb_dim, c.groupnorm_groups, c.dropout, resample)

        def attn(level, channels):
            return (SelfAttention(channels, c.attention_heads, c.groupnorm_groups)
                    if level in c.attention_levels else nn.Identity())

        # Space-to-depth: every block works on (H/f, W/f) maps with f^2 times the input channels.
        f2 = c.pixel_unshuffle ** 2
        self.input_conv = nn.Conv2d((c.image_channels + c.cond_channels) * f2, ch, 3, padding=1)
        skip_channels = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cur = ch
        levels = len(c.channel_mult)
        for i, mult in enumerate(c.channel_mult):
            blocks, attns = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(res(cur, ch * mult))
                cur = ch * mult
                attns.append(attn(i, cur))
                skip_channels.append(cur)
            self.down.append(Level(blocks, attns))
            if i < levels - 1:
                self.downsample.append(res(cur, cur, "down"))
                skip_channels.append(cur)
        self.mid1 = res(cur, cur)
        self.mid_attn = (SelfAttention(cur, c.attention_heads, c.groupnorm_groups) if c.mid_attention
                         else nn.Identity())
        self.mid2 = res(cur, cur)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(c.channel_mult))):
            blocks, attns = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(res(cur + skip_channels.pop(), ch * mult))
                cur = ch * mult
                attns.append(attn(i, cur))
            self.up.append(Level(blocks, attns))
            if i > 0:
                self.upsample.append(res(cur, cur, "up"))
        self.out_norm = group_norm(cur, c.groupnorm_groups)
        self.out_conv = nn.Conv2d(cur, c.image_channels * f2, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.config.size_multiple

    def forward(self, x_noisy: torch.Tensor, sqrt_gamma: torch.Tensor, lr_upsampled: torch.Tensor | None = None,
                class_label: torch.Tensor | None = None, aug_level: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the network target (eps, v or the image) for each example.

        x_noisy: [B, image_channels, H, W]; sqrt_gamma: [B] noise level in (0, 1];
        lr_upsampled: [B, cond_channels, H, W] or None; class_label: [B] int64 in
        [0, num_classes) (num_classes = no class, with model.null_class); aug_level: [B] in [0, 1] (CDM conditioning augmentation).
        """
        c = self.config
        emb = self.noise_mlp(sinusoidal_embedding(sqrt_gamma, c.base_channels))
        if self.class_emb is not None:
            if class_label is None:
                raise ValueError("this model is class-conditional: pass class_label")
            emb = emb + self.class_emb(class_label)
        if self.aug_mlp is not None:
            level = aug_level if aug_level is not None else torch.zeros_like(sqrt_gamma)
            emb = emb + self.aug_mlp(sinusoidal_embedding(level, c.base_channels))
        if c.cond_channels:
            if lr_upsampled is None:
                raise ValueError("this model is conditioned on a low-resolution image: pass lr_upsampled")
            x_noisy = torch.cat([x_noisy, lr_upsampled.to(x_noisy.dtype)], dim=1)

        if c.pixel_unshuffle > 1:
            x_noisy = F.pixel_unshuffle(x_noisy, c.pixel_unshuffle)
        h = self.input_conv(x_noisy)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attentions):
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h, emb)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attentions):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](h, emb)
        out = self.out_conv(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, c.pixel_unshuffle) if c.pixel_unshuffle > 1 else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
