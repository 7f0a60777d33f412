"""The denoiser contract shared by training and sampling.

Everything that turns a network output into an estimate of the clean image lives
here, once:

* :func:`add_noise` is SR3's forward process (Eq. 4);
* :func:`network_target` is what the network is trained to output (eps or v);
* :func:`predicted_x0` inverts it, given the noisy input;
* :func:`network_output` is *the* call of the U-Net with its conditioning, used by
  the training loss and by :class:`Denoiser` alike;
* :class:`Denoiser` binds a model and its conditioning into ``D(x, gamma) -> x0_hat``,
  the only thing samplers ever see.  The LR image and class label are conditioning,
  bound here, never special cases inside a sampler.

"Diffusion space" is what is noised: the HR image (SR3), or the scaled residual
HR - bicubic(LR) when ``DiffusionConfig.target == "residual"``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from .config import DiffusionConfig


@dataclass(frozen=True)
class Conditioning:
    """What a stage is conditioned on; any field may be None when unused.

    lr_upsampled: [B, C, H, W] in [-1, 1], the bicubic-upsampled LR image (SR3).
    class_label:  [B] int64 class indices (CDM base and class-conditional SR stages).
    aug_level:    [B] float in [0, 1], the conditioning-augmentation level (CDM Sec. 4.1).
    """

    lr_upsampled: torch.Tensor | None = None
    class_label: torch.Tensor | None = None
    aug_level: torch.Tensor | None = None

    def to(self, device) -> "Conditioning":
        return Conditioning(*(None if t is None else t.to(device) for t in
                              (self.lr_upsampled, self.class_label, self.aug_level)))

    def index(self, idx) -> "Conditioning":
        return Conditioning(*(None if t is None else t[idx] for t in
                              (self.lr_upsampled, self.class_label, self.aug_level)))

    def with_lr(self, lr_upsampled: torch.Tensor) -> "Conditioning":
        return replace(self, lr_upsampled=lr_upsampled)


def _bcast(gamma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return gamma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def add_noise(x0: torch.Tensor, gamma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """SR3 Eq. 4: y~ = sqrt(gamma) y0 + sqrt(1 - gamma) eps."""
    g = _bcast(gamma, x0)
    return g.sqrt() * x0 + (1 - g).sqrt() * eps


def network_target(x0: torch.Tensor, eps: torch.Tensor, gamma: torch.Tensor, prediction: str) -> torch.Tensor:
    """The training target: eps (SR3, Eq. 6) or v = sqrt(g) eps - sqrt(1-g) x0."""
    if prediction == "eps":
        return eps
    if prediction == "v":
        g = _bcast(gamma, x0)
        return g.sqrt() * eps - (1 - g).sqrt() * x0
    raise ValueError(f"unknown prediction {prediction!r}")


def predicted_x0(output: torch.Tensor, x_noisy: torch.Tensor, gamma: torch.Tensor, prediction: str) -> torch.Tensor:
    """Invert :func:`network_target`: the clean-image estimate from the network output.

    eps: x0 = (y~ - sqrt(1-g) eps) / sqrt(g)  (SR3 Eq. 8, the term inside the mean)
    v:   x0 = sqrt(g) y~ - sqrt(1-g) v
    """
    g = _bcast(gamma, x_noisy)
    if prediction == "eps":
        return (x_noisy - (1 - g).sqrt() * output) / g.sqrt()
    if prediction == "v":
        return g.sqrt() * x_noisy - (1 - g).sqrt() * output
    raise ValueError(f"unknown prediction {prediction!r}")


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast can speed up this device.

    CUDA: yes.  CPU: only where oneDNN has native bf16 kernels (AVX-512-bf16 / AMX).
    On an AVX2-only CPU (the AMD EPYC Zen 3 this project was developed on) PyTorch
    falls back to a slow reference convolution and bf16 is 5-25x *slower*
    (benchmarks/unet_speed.py), so there it is skipped.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device | str, enabled: bool):
    """bf16 autocast when asked for and the hardware runs it fast; otherwise fp32."""
    device_type = torch.device(device).type
    if not enabled or not bf16_is_fast(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def network_output(model: torch.nn.Module, x_noisy: torch.Tensor, gamma: torch.Tensor,
                   cond: Conditioning, bf16: bool = False) -> torch.Tensor:
    """Run the U-Net on a noisy batch at noise levels ``gamma`` [B] with its conditioning."""
    # channels-last lets oneDNN pick its fast convolution kernels (about 2x on CPU).
    x_noisy = x_noisy.contiguous(memory_format=torch.channels_last)
    if cond.lr_upsampled is not None:
        cond = cond.with_lr(cond.lr_upsampled.contiguous(memory_format=torch.channels_last))
    with autocast(x_noisy.device, bf16):
        out = model(x_noisy, gamma.sqrt().float(), cond.lr_upsampled, cond.class_label, cond.aug_level)
    return out.float()


# ------------------------------------------------------------ diffusion space
def to_diffusion_space(hr: torch.Tensor, cond: Conditioning, config: DiffusionConfig) -> torch.Tensor:
    """The tensor that is noised during training: HR image, or scaled residual to bicubic(LR)."""
    if config.target == "residual" and cond.lr_upsampled is not None:
        return (hr - cond.lr_upsampled) * config.residual_scale
    return hr


def from_diffusion_space(x0: torch.Tensor, cond: Conditioning, config: DiffusionConfig) -> torch.Tensor:
    """Back from diffusion space to an image in [-1, 1] (not clipped)."""
    if config.target == "residual" and cond.lr_upsampled is not None:
        return cond.lr_upsampled + x0 / config.residual_scale
    return x0


class Denoiser:
    """D(x, gamma) -> x0_hat for a model with its conditioning bound (k-diffusion style).

    ``gamma`` is a [B] tensor or a float.  The estimate is clipped so the *image* it
    implies stays in [-1, 1] (SR3 clips y0 in its sampler; in residual space the
    bounds move with the LR image).

    ``batch_invariant``: run the network one image at a time.  Convolution kernels
    round differently for different batch sizes (last-bit differences that sampling
    amplifies), so this is what makes image k bit-identical whatever the batch size;
    on a CPU it costs little because one image already fills the cores.
    """

    def __init__(self, model: torch.nn.Module, config: DiffusionConfig, cond: Conditioning,
                 bf16: bool = False, clip: bool = True, batch_invariant: bool = True):
        self.model, self.config, self.cond, self.bf16, self.clip = model, config, cond, bf16, clip
        self.batch_invariant = batch_invariant
        self.evaluations = 0  # number of network evaluations (NFE), for benchmarks

    def crop(self, window: tuple[slice, ...]) -> "Denoiser":
        """The same denoiser with spatial conditioning cropped to ``window`` (for tiling)."""
        lr = self.cond.lr_upsampled
        cond = self.cond if lr is None else self.cond.with_lr(lr[window])
        return Denoiser(self.model, self.config, cond, self.bf16, self.clip, self.batch_invariant)

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
        gamma = torch.as_tensor(gamma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        self.evaluations += 1
        if self.config.objective == "regression":
            # the regression baseline sees only its conditioning: noise input and level fixed to zero
            x, gamma = torch.zeros_like(x), torch.zeros_like(gamma)
        if self.batch_invariant and x.shape[0] > 1:
            out = torch.cat([network_output(self.model, x[k:k + 1], gamma[k:k + 1], self.cond.index(slice(k, k + 1)),
                                            self.bf16) for k in range(x.shape[0])])
        else:
            out = network_output(self.model, x, gamma, self.cond, self.bf16)
        if self.config.objective == "regression":
            x0 = out
        else:
            x0 = predicted_x0(out, x, gamma, self.config.prediction)
        if self.clip:
            image = from_diffusion_space(x0, self.cond, self.config).clamp(-1, 1)
            x0 = to_diffusion_space(image, self.cond, self.config)
        return x0
