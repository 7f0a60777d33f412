import torch

from sr3.config import DiffusionConfig
from sr3.samplers import SAMPLERS, PerSampleNoise, sample_ddim
from sr3.schedules import inference_gammas


def test_every_sampler_returns_x0_with_an_oracle_denoiser():
    x0 = torch.rand(3, 3, 8, 8) * 2 - 1
    for name, sampler in SAMPLERS.items():
        for kind in ("sr3", "logsnr", "train"):
            for steps in (1, 5, 20, 100):
                gammas = inference_gammas(steps, kind, DiffusionConfig())
                out = sampler(lambda x, g: x0, torch.randn(3, 3, 8, 8), gammas, PerSampleNoise([0, 1, 2]))
                assert torch.equal(out, x0), (name, kind, steps)


def test_deterministic_ddim_keeps_the_noise_direction_with_an_oracle():
    """With D = x0, eta = 0 DDIM stays on y_t = sqrt(g_t) x0 + sqrt(1 - g_t) eps for the initial eps."""
    x0, eps = torch.rand(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    gammas = inference_gammas(7, "logsnr", DiffusionConfig())
    seen = []

    def oracle(x, g):
        seen.append((x, g))
        return x0
    start = gammas[0].sqrt() * x0 + (1 - gammas[0]).sqrt() * eps
    sample_ddim(oracle, start.float(), gammas, PerSampleNoise([0]))
    for x, g in seen:
        expected = g ** 0.5 * x0 + (1 - g) ** 0.5 * eps
        assert torch.allclose(x, expected.float(), atol=1e-5)


def gaussian_denoiser(mean: float, std: float):
    """Exact posterior mean E[x0 | x_t] for data x0 ~ N(mean, std^2) per pixel."""
    def denoise(x, g):
        a, s2 = g ** 0.5, 1 - g
        return mean + a * std ** 2 / (a * a * std ** 2 + s2) * (x - a * mean)
    return denoise


def test_samplers_reproduce_a_gaussian_data_distribution():
    """With the exact denoiser of N(0.3, 0.2^2) data, samples have that mean and std."""
    mean, std, n = 0.3, 0.2, 20000
    for name, sampler in SAMPLERS.items():
        gammas = inference_gammas(200, "logsnr", DiffusionConfig())
        x = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        noise = lambda like: torch.randn(like.shape, generator=gen, dtype=like.dtype)  # noqa: E731
        gen = torch.Generator().manual_seed(2)
        out = sampler(gaussian_denoiser(mean, std), x, gammas, noise)
        assert abs(float(out.mean()) - mean) < 0.01, name
        assert abs(float(out.std()) - std) < 0.01, name


def test_per_sample_noise_does_not_depend_on_batch():
    like = torch.empty(3, 2, 4, 4)
    together = PerSampleNoise([5, 6, 7])(like)
    alone = PerSampleNoise([6])(like[:1])
    assert torch.equal(together[1], alone[0])


def test_temperature_scales_every_draw_and_the_spread_of_ddim_samples():
    like = torch.empty(2, 3, 4, 4)
    assert torch.equal(PerSampleNoise([5, 6], temperature=0.5)(like), 0.5 * PerSampleNoise([5, 6])(like))
    # For N(mean, std^2) data, deterministic DDIM maps the starting noise linearly onto the data, so noise of
    # temperature t gives samples of spread t * std around the same mean.
    mean, std, n = 0.3, 0.2, 20000
    gammas = inference_gammas(200, "logsnr", DiffusionConfig())
    for temperature in (0.5, 0.8):
        noise = PerSampleNoise([0], temperature)
        x = noise(torch.empty(1, n, 1, 1, dtype=torch.float64))
        out = sample_ddim(gaussian_denoiser(mean, std), x, gammas, noise)
        assert abs(float(out.mean()) - mean) < 0.01
        assert abs(float(out.std()) - temperature * std) < 0.005, temperature
