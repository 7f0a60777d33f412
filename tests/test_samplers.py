import pytest
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


def _ode_errors(sampler, step_counts, mean=0.3, std=0.2):
    """Max error of a deterministic sampler against the exact probability-flow solution, for
    N(mean, std^2) data and its exact denoiser, at each step count.

    The ODE keeps a sample's standardised position in the marginal N(sqrt(g) mean, g std^2 + 1 - g),
    so from x_T at the noisiest level the exact state at the last level gamma_L before 1 is known in
    closed form; every sampler's last step returns the denoiser's estimate there.
    """
    x_T = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64).reshape(-1, 1, 1, 1)
    denoise = gaussian_denoiser(mean, std)
    errors = []
    for n in step_counts:
        gammas = inference_gammas(n, "logsnr", DiffusionConfig())
        g_T, g_L = float(gammas[0]), float(gammas[-2])
        u = (x_T - g_T ** 0.5 * mean) / (g_T * std ** 2 + 1 - g_T) ** 0.5
        exact = denoise(g_L ** 0.5 * mean + (g_L * std ** 2 + 1 - g_L) ** 0.5 * u, g_L)
        out = sampler(denoise, x_T.clone(), gammas, lambda like: torch.zeros_like(like))
        errors.append(float((out - exact).abs().max()))
    return errors


def test_dpmpp_2m_is_second_order_and_ddim_first_order():
    """Doubling the steps divides the error by about 4 (second order) or 2 (first order).

    With the log-SNR schedule the step sizes shrink uniformly, so the ratio of successive errors
    estimates 2^order; a sign error in DPM-Solver++'s correction term makes it first order."""
    steps = (8, 16, 32, 64)
    for name, low, high in (("dpmpp", 3.2, 5.0), ("ddim", 1.6, 2.4)):
        errors = _ode_errors(SAMPLERS[name], steps)
        ratios = [a / b for a, b in zip(errors, errors[1:])]
        assert all(low < r < high for r in ratios[1:]), (name, errors, ratios)


def test_ddpm_injects_the_posterior_variance():
    """DDPM's noise per step is the posterior variance beta~ = (1 - g_t)/(1 - g_s) (1 - g_s/g_t)
    (see sample_ddpm's docstring), measured with a denoiser that returns a constant."""
    gammas = torch.tensor([0.2, 0.6, 0.9, 1.0], dtype=torch.float64)
    n = 200000
    states = []
    gen = torch.Generator().manual_seed(0)
    SAMPLERS["ddpm"](lambda x, g: torch.zeros_like(x), torch.zeros(n, 1, 1, 1, dtype=torch.float64), gammas,
                     lambda like: torch.randn(like.shape, generator=gen, dtype=like.dtype),
                     callback=lambda info: states.append(info["x"].clone()))
    # with x0_hat = 0 and x_s = 0 the mean is 0, so the first step's spread is the injected std
    s, t = 0.2, 0.6
    expected = (1 - t) / (1 - s) * (1 - s / t)
    assert abs(float(states[0].var()) - expected) < 0.01 * expected
    assert float(states[-1].abs().max()) == 0.0  # no noise is added at the last step (to gamma = 1)


def test_every_sampler_takes_the_same_options():
    x0 = torch.rand(2, 3, 4, 4)
    gammas = inference_gammas(4, "logsnr", DiffusionConfig())
    for name, sampler in SAMPLERS.items():
        seen = []
        sampler(lambda x, g: x0, torch.randn(2, 3, 4, 4), gammas, PerSampleNoise([0, 1]), eta=0.0,
                callback=lambda info: seen.append(info["i"]))
        assert seen == list(range(4)), name
    for name in ("ddpm", "dpmpp"):
        with pytest.raises(ValueError, match="eta"):
            SAMPLERS[name](lambda x, g: x0, torch.randn(2, 3, 4, 4), gammas, PerSampleNoise([0, 1]), eta=0.5)


def test_samplers_update_in_place_only_their_own_tensors():
    """The samplers sum in place to bound the memory of large upscales; the starting state, every
    estimate the denoiser returned and every state reported to the callback must stay as they were."""
    start = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(3, 3, generator=torch.Generator().manual_seed(1)) * 0.3
    for name, sampler in SAMPLERS.items():
        x = start.clone()
        returned, reported = [], []

        def denoise(x, g):
            x0 = torch.tanh(torch.einsum("ij,bjhw->bihw", weights, x) * (1 + g))
            returned.append((x0, x0.clone()))
            return x0

        def callback(info):
            reported.append((info["x"], info["x"].clone(), info["denoised"], info["denoised"].clone()))
        sampler(denoise, x, inference_gammas(6, "logsnr", DiffusionConfig()), PerSampleNoise([3, 4]),
                eta=0.5 if name == "ddim" else 0.0, callback=callback)
        assert torch.equal(x, start), name
        assert len(returned) == 6 and len(reported) == 6, name
        assert all(torch.equal(kept, copy) for kept, copy in returned), name
        assert all(torch.equal(x_kept, x_copy) and torch.equal(d_kept, d_copy)
                   for x_kept, x_copy, d_kept, d_copy in reported), name
