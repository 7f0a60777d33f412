"""Each metric against a value computed independently of the code under test."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from sr3 import metrics
from sr3.degradation import downsample



def _image(h=48, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(1, 3, h, w, generator=g)  # stays in [0, 1] after a +-0.1 offset


def test_psnr_of_a_known_constant_offset():
    hr = _image()
    # MSE = 0.1^2 on [0, 1]  ->  PSNR = 10 log10(1 / 0.01) = 20 dB, whatever the border crop.
    assert metrics.psnr(hr + 0.1, hr).item() == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(hr + 0.1, hr, border=4).item() == pytest.approx(20.0, abs=1e-4)
    # On BT.601 Y an offset d in each of R, G, B moves Y by d * (65.481 + 128.553 + 24.966) / 255.
    dy = 0.1 * 219.0 / 255.0
    assert metrics.psnr(hr + 0.1, hr, y_channel=True).item() == pytest.approx(-20 * math.log10(dy), abs=1e-4)


def test_y_channel_is_bt601_studio_range():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert metrics.rgb_to_y(white).mean().item() * 255 == pytest.approx(235.0, abs=1e-3)
    assert metrics.rgb_to_y(black).mean().item() * 255 == pytest.approx(16.0, abs=1e-3)


def test_border_crop_ignores_the_edge():
    hr = _image()
    sr = hr.clone()
    sr[..., :2, :] = 0.0  # damage only the top 2 rows
    assert math.isinf(metrics.psnr(sr, hr, border=2).item())
    assert metrics.psnr(sr, hr, border=0).item() < 40


def test_ssim_and_ms_ssim_of_identical_images_are_one():
    hr = _image()
    assert metrics.ssim(hr, hr).item() == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(hr, hr, y_channel=True, border=2).item() == pytest.approx(1.0, abs=1e-5)
    big = _image(176, 180)
    assert metrics.ms_ssim(big, big).item() == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(big, (big + 0.3 * torch.rand_like(big)).clamp(0, 1)).item() < 0.9


def test_ms_ssim_is_nan_below_its_minimum_size():
    small = _image(64, 64)
    assert math.isnan(metrics.ms_ssim(small, small).item())
    assert math.isnan(metrics.ms_ssim(_image(180, 180), _image(180, 180), border=4).item())  # 172 px after crop
    assert metrics.MS_SSIM_MIN_SIZE == 176


def test_consistency_of_a_perfect_downsample_is_zero():
    hr = _image(32, 24)
    assert metrics.consistency(hr, downsample(hr, 4), 4).item() == pytest.approx(0.0, abs=1e-8)
    # A constant offset c survives the (normalised) bicubic kernel: MSE = (255 c)^2 on [0, 255].
    assert metrics.consistency(hr + 0.02, downsample(hr, 4), 4).item() == pytest.approx((255 * 0.02) ** 2, rel=1e-4)


def test_colour_shift_reads_a_cast_in_grey_levels():
    hr = _image(32, 24)
    assert metrics.colour_shift(hr, downsample(hr, 4), 4).item() == pytest.approx(0.0, abs=1e-4)
    tinted = hr.clone()
    tinted[:, 2] += 0.02  # blue raised by 0.02 -> 5.1 grey levels; red and green untouched
    assert metrics.colour_shift(tinted, downsample(hr, 4), 4).item() == pytest.approx(255 * 0.02, rel=1e-4)
    # Zero-mean detail (a checkerboard) is not a colour cast.
    checker = ((torch.arange(32)[:, None] + torch.arange(24)[None]) % 2).float().mul(0.04).sub(0.02)
    assert metrics.colour_shift(hr + checker, downsample(hr, 4), 4).item() == pytest.approx(0.0, abs=1e-3)


def test_fidelity_metrics_keys():
    hr = _image(32, 32)
    m = metrics.fidelity_metrics(hr[0], hr[0], downsample(hr, 2)[0], 2)
    assert set(m) == set(metrics.FIDELITY_METRICS)
    assert m["ssim_y"] == pytest.approx(1.0, abs=1e-5) and m["consistency"] == pytest.approx(0.0, abs=1e-8)


def _gaussian_features(mean, cov, n=400, seed=0):
    """Samples whose *sample* mean and (unbiased) covariance are exactly ``mean`` and ``cov``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(mean)))
    x -= x.mean(axis=0)
    c = x.T @ x / (n - 1)
    w = np.linalg.inv(np.linalg.cholesky(c)).T  # whiten: sample covariance becomes I
    z = x @ w
    return torch.tensor(z @ np.linalg.cholesky(cov).T + mean)


def test_fid_of_identical_feature_sets_is_zero():
    f = _gaussian_features(np.zeros(3), np.diag([1.0, 2.0, 3.0]))
    s = metrics.distribution_scores(f, f.clone(), extractor="test")
    assert s.fid == pytest.approx(0.0, abs=1e-6) and s.extractor == "test"


def test_kid_is_near_zero_for_one_distribution_and_large_for_two():
    a = _gaussian_features(np.zeros(3), np.eye(3), seed=4)
    b = _gaussian_features(np.zeros(3), np.eye(3), seed=5)
    c = _gaussian_features(np.full(3, 2.0), np.eye(3), seed=6)
    same = metrics.distribution_scores(a, b, extractor="t", kid_subset_size=100, kid_subsets=20)
    far = metrics.distribution_scores(a, c, extractor="t", kid_subset_size=100, kid_subsets=20)
    assert abs(same.kid_mean) < 0.1 * far.kid_mean


def test_fid_matches_the_closed_form_frechet_distance_of_two_gaussians():
    # d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); for diagonal S this is
    # 5 + (1 + 9 - 2*3) + (4 + 1 - 2*2) = 10, computed by hand.
    real = _gaussian_features(np.array([0.0, 0.0]), np.diag([1.0, 4.0]), seed=1)
    fake = _gaussian_features(np.array([1.0, 2.0]), np.diag([9.0, 1.0]), seed=2)
    assert metrics.distribution_scores(real, fake, extractor="t").fid == pytest.approx(10.0, rel=1e-6)


def test_fid_matches_scipy_for_full_covariances():
    from scipy.linalg import sqrtm

    s1 = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.5]])
    s2 = np.array([[1.0, -0.2, 0.0], [-0.2, 2.0, 0.4], [0.0, 0.4, 0.7]])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.5, 0.5])
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    got = metrics.distribution_scores(_gaussian_features(m1, s1), _gaussian_features(m2, s2, seed=3), extractor="t").fid
    assert got == pytest.approx(expected, rel=1e-6)


def test_inception_score_extremes():
    f = torch.randn(10, 4, dtype=torch.float64)
    uniform = torch.zeros(10, 10)
    assert metrics.distribution_scores(f, f, extractor="t", fake_logits=uniform, is_splits=1).is_mean == \
        pytest.approx(1.0, abs=1e-6)
    confident = 100.0 * torch.eye(10)  # each image certain of a different class: IS = number of classes
    assert metrics.distribution_scores(f, f, extractor="t", fake_logits=confident, is_splits=1).is_mean == \
        pytest.approx(10.0, rel=1e-4)


def test_too_few_images_give_nan_with_a_note():
    s = metrics.distribution_scores(torch.zeros(1, 3), torch.zeros(1, 3), extractor="t")
    assert math.isnan(s.fid) and "at least 2" in s.notes


def test_random_extractor_separates_distributions_and_names_itself():
    ex = metrics.RandomConvExtractor(dim=16, seed=0)
    assert "NOT Inception" in ex.name
    g = torch.Generator().manual_seed(0)
    smooth = [torch.full((3, 24, 20), v) for v in torch.rand(8, generator=g).tolist()]
    noisy = [torch.rand(3, 24, 20, generator=g) for _ in range(8)]
    noisy2 = [torch.rand(3, 24, 20, generator=g) for _ in range(8)]
    fs, _ = metrics.extract_features(ex, smooth)
    fn, logits = metrics.extract_features(ex, noisy)
    fn2, _ = metrics.extract_features(ex, noisy2)
    assert fn.shape == (8, 16) and logits.shape == (8, 10)
    assert metrics.distribution_scores(fn, fs, extractor=ex.name).fid > \
        3 * metrics.distribution_scores(fn, fn2, extractor=ex.name).fid


def test_inception_extractor_reports_a_missing_file(tmp_path):
    from sr3.errors import UserError

    with pytest.raises(UserError, match="no such Inception weights"):
        metrics.InceptionExtractor(str(tmp_path / "missing.pth"))


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 1.0, size=50)
    mean, lo, hi = metrics.bootstrap_ci(x, seed=3)
    assert mean == pytest.approx(x.mean()) and lo < mean < hi
    # 95% percentile CI of a mean of 50 N(10,1) draws is about mean +- 1.96 / sqrt(50).
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(50), rel=0.25)
    assert metrics.bootstrap_ci(x, seed=3) == (mean, lo, hi)
    assert metrics.bootstrap_ci([2.0, 2.0, float("nan")]) == (2.0, 2.0, 2.0)
    assert math.isnan(metrics.bootstrap_ci([1.0])[1]) and math.isnan(metrics.bootstrap_ci([])[0])


def test_bootstrap_ci_of_many_images_resamples_in_batches_with_the_same_draws():
    from scipy.stats import bootstrap

    x = np.random.default_rng(1).normal(size=5000)  # 2,000 x 5,000 resampled values: 80 MB in one batch
    whole = bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                      rng=np.random.default_rng(3)).confidence_interval
    assert metrics.bootstrap_ci(x, seed=3) == (x.mean(), whole.low, whole.high)


class _Brightness(nn.Module):
    """Class 1 if the mean intensity is above 0.5: a fixed, hand-checkable classifier."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1)


def _two_class_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.3 * torch.rand(n, 1, 8, 8, generator=g) + 0.6 * labels.view(-1, 1, 1, 1)
    return images, labels


def test_classification_accuracy_of_a_known_classifier():
    images, labels = _two_class_data(20, 0)
    assert metrics.classification_accuracy(_Brightness(), images, labels) == {"top1": 1.0, "top5": 1.0}
    flipped = 1 - labels
    assert metrics.classification_accuracy(_Brightness(), images, flipped, topk=(1,))["top1"] == 0.0


def test_cas_trains_on_generated_and_tests_on_real():
    gen_x, gen_y = _two_class_data(64, 1)
    real_x, real_y = _two_class_data(32, 2)
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 2))  # noqa: E731
    good = metrics.classification_accuracy_score(make, gen_x, gen_y, real_x, real_y, epochs=30, lr=0.05, seed=0)
    assert good["top1"] == 1.0 and good["n_train"] == 64 and good["n_test"] == 32
    # Generated images whose labels carry no information score at chance or below.
    bad = metrics.classification_accuracy_score(make, gen_x, 1 - gen_y, real_x, real_y, epochs=30, lr=0.05, seed=0)
    assert bad["top1"] <= 0.5
    again = metrics.classification_accuracy_score(make, gen_x, gen_y, real_x, real_y, epochs=30, lr=0.05, seed=0)
    assert again == good


def test_classifier_training_anneals_the_rate_to_zero(monkeypatch):
    """CAS and the feature CNN end on a cosine-annealed rate, not wherever a constant rate's last step lands."""
    rates, step = [], torch.optim.Adam.step

    def spy(self, *a, **k):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)
    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    x, y = _two_class_data(64, 1)
    metrics.fit_classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), x, y, epochs=3, batch_size=16, lr=0.1)
    assert len(rates) == 12 and rates[0] == 0.1 and rates[-1] < 0.1 * 0.02
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_standard_inception_path_explains_a_missing_torch_fidelity(tmp_path):
    from sr3.errors import UserError

    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="torch-fidelity"):
            metrics.InceptionExtractor(str(weights))
    else:
        pytest.skip("torch-fidelity installed: the real weights are needed to go further")
