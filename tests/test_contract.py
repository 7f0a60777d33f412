"""The denoiser contract: the training target and the sampling inverse agree for every
parameterisation (eps / v / x0) in image and residual space, and the regression adapter
behaves as SR3's baseline."""

import itertools

import pytest
import torch

from sr3.config import DiffusionConfig
from sr3.diffusion import Conditioning, Denoiser, PARAMETERIZATIONS, RegressionDenoiser, add_noise, make_denoiser, \
    from_diffusion_space, to_diffusion_space
from sr3.schedules import training_gammas

COMBINATIONS = list(itertools.product(PARAMETERIZATIONS, ("image", "residual")))


class Oracle(torch.nn.Module):
    """A "network" that outputs the exact training target for the clean signal ``x0`` it was given:
    it recovers eps from the noisy input and the level, then applies the parameterisation."""

    def __init__(self, x0, prediction):
        super().__init__()
        self.x0, self.parameterization = x0, PARAMETERIZATIONS[prediction]

    def forward(self, x_noisy, sqrt_gamma, lr_upsampled=None, class_label=None, aug_level=None):
        g = (sqrt_gamma.double() ** 2).reshape(-1, 1, 1, 1)
        x_noisy = x_noisy.double()
        eps = (x_noisy - g.sqrt() * self.x0) / (1 - g).sqrt()
        return self.parameterization.target(self.x0, eps, g).float()


def _case(target):
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 8, 8, generator=gen) * 1.6 - 0.8
    lr_up = (hr + 0.3 * torch.randn(2, 3, 8, 8, generator=gen)).clamp(-1, 1)
    config = DiffusionConfig(target=target, residual_scale=3.0)
    cond = Conditioning(lr_upsampled=lr_up)
    return hr, cond, config


@pytest.mark.parametrize("prediction,target", COMBINATIONS)
def test_the_sampling_inverse_undoes_the_training_target(prediction, target):
    hr, cond, config = _case(target)
    config = DiffusionConfig(**{**config.__dict__, "prediction": prediction})
    x0 = to_diffusion_space(hr, cond, config).double()
    denoiser = Denoiser(Oracle(x0, prediction), config, cond, clip=False, batched=True)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for gamma in (0.02, 0.5, 0.98):
        noisy = add_noise(x0, torch.full((2,), gamma, dtype=torch.float64), eps).float()
        estimate = denoiser(noisy, gamma)
        assert torch.allclose(estimate, x0.float(), atol=2e-4), (prediction, target, gamma)
        assert torch.allclose(denoiser.to_image(estimate), hr, atol=2e-4)  # and back to the HR image


@pytest.mark.parametrize("prediction,target", COMBINATIONS)
def test_the_training_loss_is_zero_for_the_exact_target(prediction, target):
    """If loss() regressed onto anything but the parameterisation's target, the oracle's loss would not vanish."""
    hr, cond, config = _case(target)
    config = DiffusionConfig(**{**config.__dict__, "prediction": prediction})
    x0 = to_diffusion_space(hr, cond, config).double()
    denoiser = Denoiser(Oracle(x0, prediction), config, cond, batched=True)
    loss = denoiser.loss(hr, training_gammas(config), torch.Generator().manual_seed(3))
    assert float(loss) < 1e-4, (prediction, target, float(loss))
    # the image a training draw implies (what an adversarial term judges) is the HR image for the exact target
    draw = denoiser.training_prediction(hr, training_gammas(config), torch.Generator().manual_seed(3))
    assert torch.allclose(denoiser.estimate(draw), hr, atol=2e-3), (prediction, target)


def test_regression_is_an_adapter_of_the_same_contract():
    hr, cond, config = _case("residual")
    config = DiffusionConfig(**{**config.__dict__, "objective": "regression"})
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x_noisy, sqrt_gamma, lr_upsampled=None, class_label=None, aug_level=None):
            seen.append((x_noisy.abs().max().item(), sqrt_gamma.abs().max().item()))
            return torch.full_like(x_noisy, 0.25)

    denoiser = make_denoiser(Net(), config, cond, clip=False)
    assert isinstance(denoiser, RegressionDenoiser)
    out = denoiser(torch.randn(2, 3, 8, 8), 0.3)
    assert torch.allclose(out, torch.full_like(out, 0.25))  # its prediction, whatever the input
    assert set(seen) == {(0.0, 0.0)}  # the network saw zero noise input and level
    gammas = torch.linspace(0.01, 1, 9)
    assert torch.equal(denoiser.noise_levels(gammas), gammas[[0, -1]])  # one evaluation is a sample
    target = to_diffusion_space(hr, cond, config)
    assert torch.allclose(denoiser.loss(hr, gammas, torch.Generator()), (0.25 - target).abs().mean())
    draw = denoiser.training_prediction(hr, gammas, torch.Generator())
    assert torch.allclose(denoiser.estimate(draw), from_diffusion_space(torch.full_like(hr, 0.25), cond, config))
