import math

import torch

from sr3.config import DiffusionConfig
from sr3.schedules import (gamma_to_lambda, inference_gammas, lambda_to_gamma, linear_gammas,
                           sample_training_gammas, training_gammas)


def test_gammas_are_cumulative_products_of_one_minus_beta():
    betas = torch.linspace(1e-4, 0.1, 100, dtype=torch.float64)
    gammas = linear_gammas(100, 1e-4, 0.1)
    assert gammas[0] == 1.0
    assert torch.allclose(gammas[1:] / gammas[:-1], 1 - betas)
    assert math.isclose(float(gammas[-1]), float(torch.prod(1 - betas)), rel_tol=1e-12)


def test_sr3_inference_schedule_is_the_papers_at_100_steps():
    gammas = inference_gammas(100, "sr3", DiffusionConfig())
    expected = linear_gammas(100, 1e-4, 0.1).flip(0)  # noisiest first, ends at gamma_0 = 1
    assert torch.allclose(gammas, expected, rtol=1e-12)


def test_inference_schedules_decrease_noise_and_end_clean():
    for kind in ("sr3", "logsnr", "train"):
        for steps in (1, 5, 20, 1000):
            g = inference_gammas(steps, kind, DiffusionConfig())
            assert g.shape == (steps + 1,)
            assert g[-1] == 1.0
            assert bool((g[1:] >= g[:-1]).all()), (kind, steps)


def test_logsnr_schedule_is_evenly_spaced_in_lambda():
    g = inference_gammas(10, "logsnr", DiffusionConfig())[:-1]
    steps = gamma_to_lambda(g).diff()
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-9)


def test_lambda_round_trip():
    g = torch.tensor([1e-5, 0.1, 0.5, 0.9, 0.999999], dtype=torch.float64)
    assert torch.allclose(lambda_to_gamma(gamma_to_lambda(g)), g, rtol=1e-9)


def test_training_gammas_lie_between_neighbouring_steps():
    gammas = training_gammas(DiffusionConfig(timesteps=50))
    sample = sample_training_gammas(gammas, 10000, torch.Generator().manual_seed(0)).double()
    assert float(sample.min()) >= float(gammas[-1]) - 1e-7 and float(sample.max()) <= 1.0
    # every step's interval gets hit: the continuous levels cover the whole schedule
    buckets = torch.bucketize(sample, gammas.flip(0).float().double())
    assert len(torch.unique(buckets)) == 50


def test_cosine_schedule_matches_closed_form():
    gammas = training_gammas(DiffusionConfig(schedule="cosine", timesteps=1000))
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert math.isclose(float(gammas[500]), f(0.5) / f(0.0), rel_tol=1e-6)
