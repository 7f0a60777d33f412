"""The denoiser contract shared by training and sampling.

Everything that turns a network output into an estimate of the clean image, or a
clean image into a training target, lives here, once:

* :func:`add_noise` is SR3's forward process (Eq. 4);
* :data:`PARAMETERIZATIONS` holds, for each ``prediction`` (eps / v / x0), the
  training target and its inverse side by side, so they cannot drift apart;
* :func:`to_diffusion_space` / :func:`from_diffusion_space`: what is noised, the HR
  image (SR3) or the scaled residual HR - bicubic(LR);
* :class:`Denoiser` binds a model and its conditioning.  ``D(x, gamma) -> x0_hat``
  is the only thing samplers see, and ``D.loss(hr, ...)`` is the only thing the
  training loop calls (``D.training_prediction`` and ``D.estimate`` are its parts, for
  objectives built on top of it).  :class:`RegressionDenoiser` is SR3's regression baseline
  as an adapter of the same contract.  :func:`make_denoiser` picks the class from
  ``DiffusionConfig.objective`` (the one place an objective is looked up).

The LR image and class label are conditioning (:class:`Conditioning`), bound here,
never special cases inside a sampler or the training loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .config import DiffusionConfig
from .schedules import sample_training_gammas


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

    def without_class(self, null_class: int) -> "Conditioning":
        """The same conditioning with every label replaced by the "no class" index."""
        return replace(self, class_label=torch.full_like(self.class_label, null_class))


def _bcast(gamma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return gamma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def add_noise(x0: torch.Tensor, gamma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """SR3 Eq. 4: y~ = sqrt(gamma) y0 + sqrt(1 - gamma) eps."""
    g = _bcast(gamma, x0)
    return g.sqrt() * x0 + (1 - g).sqrt() * eps


# ------------------------------------------------------------ parameterisations
class EpsPrediction:
    """The network predicts the noise (SR3 Eq. 6; DDPM)."""

    @staticmethod
    def target(x0, eps, g):
        return eps

    @staticmethod
    def x0(output, x_noisy, g):
        # y0 = (y~ - sqrt(1-g) eps) / sqrt(g): SR3 Eq. 8, the term inside the mean
        return (x_noisy - (1 - g).sqrt() * output) / g.sqrt()


class VPrediction:
    """The network predicts v = sqrt(g) eps - sqrt(1-g) x0 (Salimans & Ho 2022, Sec. 4)."""

    @staticmethod
    def target(x0, eps, g):
        return g.sqrt() * eps - (1 - g).sqrt() * x0

    @staticmethod
    def x0(output, x_noisy, g):
        # sqrt(g) y~ - sqrt(1-g) v = g x0 + (1-g) x0 (the eps terms cancel)
        return g.sqrt() * x_noisy - (1 - g).sqrt() * output


class X0Prediction:
    """The network predicts the clean signal itself."""

    @staticmethod
    def target(x0, eps, g):
        return x0

    @staticmethod
    def x0(output, x_noisy, g):
        return output


PARAMETERIZATIONS = {"eps": EpsPrediction, "v": VPrediction, "x0": X0Prediction}
"""DiffusionConfig.prediction -> its (target, inverse) pair."""


# ------------------------------------------------------------ the network call
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


def distance(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 or L2 distance (SR3 Eq. 6 with p = 1 or 2)."""
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


# ------------------------------------------------------------ denoisers
class Denoiser:
    """SR3's diffusion denoiser: ``D(x, gamma) -> x0_hat`` and ``D.loss(hr, ...)``, with a
    model and its conditioning bound (k-diffusion's ``Denoiser``).

    ``gamma`` is a [B] tensor or a float.  The estimate is clipped so the *image* it
    implies stays in [-1, 1] (SR3 clips y0 in its sampler; in residual space the
    bounds move with the LR image).

    batched: False runs the network one image at a time.  Convolution kernels round
        differently for different batch sizes (last-bit differences that sampling
        amplifies), so per-image evaluation is what makes image k bit-identical
        whatever the batch size; on a CPU it costs little because one image already
        fills the cores.  True: one forward pass per batch (GPUs).
    on_evaluation: called with no argument once per network evaluation (one call of
        this denoiser, whatever the batch size), e.g. a progress bar's tick.
    guidance: classifier-free guidance weight w >= 0 (SamplingConfig.guidance); 0 = off.
    null_class: the "no class" label index (model.num_classes) the unconditional estimate uses.
    """

    def __init__(self, model: torch.nn.Module, config: DiffusionConfig, cond: Conditioning, *,
                 bf16: bool = False, clip: bool = True, batched: bool = False,
                 on_evaluation: Callable[[], None] | None = None, guidance: float = 0.0,
                 null_class: int | None = None):
        self.model, self.config, self.cond, self.bf16, self.clip = model, config, cond, bf16, clip
        self.batched, self.on_evaluation = batched, on_evaluation
        self.guidance, self.null_class = guidance, null_class
        if guidance and (null_class is None or cond.class_label is None):
            raise ValueError("classifier-free guidance needs class labels and the null class index")
        self.parameterization = PARAMETERIZATIONS[config.prediction]

    def crop(self, window: tuple[slice, ...]) -> "Denoiser":
        """The same denoiser with spatial conditioning cropped to ``window`` (for tiling)."""
        lr = self.cond.lr_upsampled
        cond = self.cond if lr is None else self.cond.with_lr(lr[window])
        return type(self)(self.model, self.config, cond, bf16=self.bf16, clip=self.clip, batched=self.batched,
                          on_evaluation=self.on_evaluation, guidance=self.guidance, null_class=self.null_class)

    def noise_levels(self, gammas: torch.Tensor) -> torch.Tensor:
        """The levels a sampler should visit, given a schedule (all of them for diffusion)."""
        return gammas

    def to_image(self, x0: torch.Tensor) -> torch.Tensor:
        """A clean sample in diffusion space -> image in [-1, 1]."""
        return from_diffusion_space(x0, self.cond, self.config).clamp(-1, 1)

    def network(self, x: torch.Tensor, gamma: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        """The raw network output for a batch (conditioning: the bound one unless given), per image
        unless ``batched``."""
        cond = self.cond if cond is None else cond
        if self.batched or x.shape[0] == 1:
            return network_output(self.model, x, gamma, cond, self.bf16)
        return torch.cat([network_output(self.model, x[k:k + 1], gamma[k:k + 1], cond.index(slice(k, k + 1)),
                                         self.bf16) for k in range(x.shape[0])])

    def predict_x0(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Unclipped clean-signal estimate in diffusion space (classifier-free guided if ``guidance``)."""
        g = _bcast(gamma, x)
        x0 = self.parameterization.x0(self.network(x, gamma), x, g)
        if self.guidance:
            # Ho & Salimans 2022, Eq. 6: eps~ = (1 + w) eps(x, c) - w eps(x).  With x and gamma fixed, x0 is
            # affine in eps (x0 = (x - sqrt(1 - gamma) eps) / sqrt(gamma)), so the same mix of x0 estimates
            # is exactly the guided estimate, whatever the parameterisation.
            unconditional = self.network(x, gamma, self.cond.without_class(self.null_class))
            x0 = x0 + self.guidance * (x0 - self.parameterization.x0(unconditional, x, g))
        return x0

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
        gamma = torch.as_tensor(gamma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        x0 = self.predict_x0(x, gamma)
        if self.on_evaluation is not None:
            self.on_evaluation()
        if self.clip:
            x0 = to_diffusion_space(self.to_image(x0), self.cond, self.config)
        return x0

    def training_prediction(self, hr: torch.Tensor, train_gammas: torch.Tensor,
                            generator: torch.Generator) -> "TrainingPrediction":
        """SR3 Algorithm 1 up to the loss: pick gamma ~ p(gamma), noise the target, run the network.

        hr: [B, C, H, W] in [-1, 1]; train_gammas: the training schedule [T+1];
        generator: CPU generator for gamma and eps (seeded per step for exact resume).
        """
        x0 = to_diffusion_space(hr, self.cond, self.config)
        gamma = sample_training_gammas(train_gammas, x0.shape[0], generator).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_noisy = add_noise(x0, gamma, eps)
        output = network_output(self.model, x_noisy, gamma, self.cond, self.bf16)
        return TrainingPrediction(output, self.parameterization.target(x0, eps, _bcast(gamma, x0)), x_noisy, gamma)

    def estimate(self, prediction: "TrainingPrediction") -> torch.Tensor:
        """The image [-1, 1] implied by a training prediction (not clipped: gradients reach every pixel)."""
        x0 = self.parameterization.x0(prediction.output, prediction.x_noisy,
                                      _bcast(prediction.gamma, prediction.output))
        return from_diffusion_space(x0, self.cond, self.config)

    def loss(self, hr: torch.Tensor, train_gammas: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """SR3 Algorithm 1: regress the network's output onto the parameterisation's target (eps, v or x0)."""
        prediction = self.training_prediction(hr, train_gammas, generator)
        return distance(prediction.output, prediction.target, self.config.loss)


@dataclass(frozen=True)
class TrainingPrediction:
    """One training draw of :meth:`Denoiser.training_prediction`, all [B, C, H, W] but ``gamma`` [B].

    output: the network's output; target: what it regresses onto (the parameterisation's target);
    x_noisy: the noised target it saw (SR3 Eq. 4); gamma: the noise levels drawn.
    """

    output: torch.Tensor
    target: torch.Tensor
    x_noisy: torch.Tensor
    gamma: torch.Tensor


class RegressionDenoiser(Denoiser):
    """SR3's regression baseline (Sec. 4.1) behind the same contract: the same U-Net sees
    its conditioning with the noisy input and the noise level fixed to zero, and predicts
    the target directly.  It ignores ``x`` and ``gamma``, so one evaluation is a sample."""

    def noise_levels(self, gammas: torch.Tensor) -> torch.Tensor:
        return gammas[[0, -1]]  # one step from pure noise to clean: a single network evaluation

    def predict_x0(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return self.network(torch.zeros_like(x), torch.zeros_like(gamma))

    def training_prediction(self, hr: torch.Tensor, train_gammas: torch.Tensor,
                            generator: torch.Generator) -> TrainingPrediction:
        target = to_diffusion_space(hr, self.cond, self.config)
        zeros = torch.zeros(target.shape[0], device=target.device)
        x_zero = torch.zeros_like(target)
        output = network_output(self.model, x_zero, zeros, self.cond, self.bf16)  # batched
        return TrainingPrediction(output, target, x_zero, zeros)

    def estimate(self, prediction: TrainingPrediction) -> torch.Tensor:
        return from_diffusion_space(prediction.output, self.cond, self.config)  # the output is the target itself


DENOISERS: dict[str, type[Denoiser]] = {"diffusion": Denoiser, "regression": RegressionDenoiser}
"""DiffusionConfig.objective -> its denoiser class.  A new objective is one entry here."""


def make_denoiser(model: torch.nn.Module, config: DiffusionConfig, cond: Conditioning, **kwargs) -> Denoiser:
    """The denoiser for ``config.objective`` (keyword arguments as in :class:`Denoiser`)."""
    return DENOISERS[config.objective](model, config, cond, **kwargs)
