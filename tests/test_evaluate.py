"""`sr3 evaluate` end to end on generated images: files, structure, resume and bad inputs."""

import csv
import dataclasses
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sr3 import evaluate, methods, raisr
from sr3.cli import build_parser
from sr3.commands.evaluate import build_methods
from sr3.config import SamplingConfig, flag_values
from sr3.evaluate import EvaluationConfig
from sr3.cli import main as cli_main
from sr3.errors import UserError

try:  # the synthetic-photo generator and small RAISR settings are shared with test_raisr
    from test_raisr import SMALL, shapes_image
except ImportError:  # tests/ collected as a package
    from tests.test_raisr import SMALL, shapes_image



@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """A tiny 2x RAISR bank trained on generated images (tests never read ../shared/data)."""
    data = tmp_path_factory.mktemp("bank_data")
    for i in range(3):
        shapes_image(i, 64).save(data / f"{i}.png")
    out = tmp_path_factory.mktemp("bank")
    torch.set_num_threads(1)
    raisr.train_raisr([data], 2, max_patches_per_image=3000, out_dir=out, progress=False, **SMALL)
    return out


def _hr_folder(tmp_path, n=3):
    d = tmp_path / "hr"
    d.mkdir()
    for i in range(n):
        shapes_image(20 + i, 40 + 2 * i).save(d / f"img{i}.png")
    return d


def _args(**kw):
    """Parsed ``sr3 evaluate`` flags (keyword = flag name with underscores)."""
    base = dict(methods="bicubic,raisr", scale=2, report_images=2, quiet=True)
    base.update(kw)
    argv = ["evaluate"]
    for k, v in base.items():
        if v is None:
            continue
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return build_parser().parse_args(argv)


def _evaluate(args):
    """What ``sr3 evaluate`` does, with UserError raised instead of printed."""
    config = EvaluationConfig(**flag_values(EvaluationConfig, args))
    return evaluate.evaluate(config, *build_methods(args, config))


def _rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_end_to_end_writes_csv_json_and_a_self_contained_report(tmp_path, bank):
    hr = _hr_folder(tmp_path)
    out = tmp_path / "out"
    summary = _evaluate(_args(data=hr, out=out, raisr_model=bank, feature_extractor="random"))
    rows = _rows(out)
    assert len(rows) == 6 and {r["method"] for r in rows} == {"bicubic", "raisr"}
    assert set(rows[0]) == set(evaluate.CSV_FIELDS)
    data = json.loads((out / "metrics.json").read_text())
    assert data == json.loads(json.dumps(summary))
    assert data["scale"] == 2 and data["n_images"] == 3
    assert data["conventions"]["border_crop_px"] == 2 and "BT.601" in data["conventions"]["y_channel"]
    assert "NOT Inception" in data["extractor"]
    for name in ("bicubic", "raisr"):
        m = data["methods"][name]
        for metric in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "ms_ssim", "consistency"):
            assert set(m["metrics"][metric]) == {"mean", "ci_low", "ci_high", "n"}
        psnr = m["metrics"]["psnr_y"]
        assert psnr["ci_low"] <= psnr["mean"] <= psnr["ci_high"]
        assert m["metrics"]["ms_ssim"]["mean"] is None  # 40 px images: MS-SSIM undefined, not faked
        assert m["distribution"]["extractor"] == data["extractor"] and m["distribution"]["fid"] >= 0
    # Streamed one image at a time, the distribution scores are those of all features at once (each
    # method against the same HR images, whichever method came first).
    extractor = evaluate.make_extractor(None, "random")
    samples = evaluate.collect_samples(hr, None, 0)
    real, _ = evaluate.M.extract_features(extractor, [evaluate._unit(evaluate.prepare_pair(s, 2)[0]) for s in samples])
    for name in ("bicubic", "raisr"):
        fake, logits = evaluate.M.extract_features(
            extractor, [evaluate._unit(Image.open(evaluate.image_file(out, name, s.key))) for s in samples])
        whole = evaluate.M.distribution_scores(real, fake, extractor=extractor.name, fake_logits=logits, seed=0)
        streamed = data["methods"][name]["distribution"]
        assert streamed["n_real"] == streamed["n_fake"] == 3
        assert (streamed["fid"], streamed["kid_mean"]) == pytest.approx((whole.fid, whole.kid_mean), rel=1e-6, abs=1e-9)
    # The per-image CSV agrees with the JSON means.
    bic = [float(r["psnr_y"]) for r in rows if r["method"] == "bicubic"]
    assert data["methods"]["bicubic"]["metrics"]["psnr_y"]["mean"] == pytest.approx(np.mean(bic), rel=1e-5)
    html = (out / "report.html").read_text()
    assert html.count("data:image/") >= 2 * 2 * 4  # 2 grid rows x (LR, bicubic, raisr, HR) x (view, zoom)
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from disk or network
    assert "PSNR Y" in html and "NOT Inception" in html


def test_resume_skips_finished_rows_and_survives_a_torn_line(tmp_path, bank):
    hr = _hr_folder(tmp_path)
    out = tmp_path / "out"
    args = _args(data=hr, out=out, raisr_model=bank)
    _evaluate(args)
    lines = (out / "metrics.csv").read_text().splitlines(keepends=True)
    kept = lines[:3]  # header + two finished rows
    (out / "metrics.csv").write_text("".join(kept) + lines[3][:15])  # ...and half a row, as if killed mid-write
    calls = []
    original = methods.BicubicUpscaler.__call__
    methods.BicubicUpscaler.__call__ = lambda self, lr, *a, **k: calls.append(lr.shape) or original(self, lr, *a, **k)
    try:
        _evaluate(args)
    finally:
        methods.BicubicUpscaler.__call__ = original
    rows = _rows(out)
    keys = [(r["method"], r["image"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6  # complete, no duplicates, the torn row dropped
    done_before = {tuple(line.split(",")[:2]) for line in kept[1:]}
    assert len(calls) == sum(1 for m, _ in done_before if m != "bicubic") + 1  # only missing bicubic rows redone
    assert "".join(kept[1:]) in (out / "metrics.csv").read_text()  # old rows untouched


def test_resume_refuses_a_different_scale(tmp_path):
    hr = _hr_folder(tmp_path, 1)
    _evaluate(_args(data=hr, out=tmp_path / "o", methods="bicubic"))
    with pytest.raises(UserError, match="scale = 2, not 4"):
        _evaluate(_args(data=hr, out=tmp_path / "o", methods="bicubic", scale=4))


def test_empty_folder_is_a_one_line_cli_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli_main(["evaluate", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                     "--methods", "bicubic"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no images found" in err and len(err.splitlines()) == 1


def test_mismatched_pairs(tmp_path):
    hr = _hr_folder(tmp_path, 2)
    lr = tmp_path / "lr"
    lr.mkdir()
    Image.open(hr / "img0.png").resize((20, 20)).save(lr / "img0.png")  # 40 px HR / 2: a good pair
    with pytest.raises(UserError, match="1 of 2 HR images have no LR image"):
        _evaluate(_args(data=hr, lr_data=lr, out=tmp_path / "o", methods="bicubic"))
    Image.new("RGB", (30, 30)).save(lr / "img1.png")  # wrong size for 42 px HR at 2x: reported, skipped
    with pytest.warns(UserWarning, match="does not match HR"):
        summary = _evaluate(_args(data=hr, lr_data=lr, out=tmp_path / "o2", methods="bicubic"))
    assert summary["n_images"] == 1 and "img1.png" in summary["skipped"]


def test_odd_tiny_grey_and_corrupt_images_do_not_stop_the_run(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    shapes_image(1, 41).crop((0, 0, 41, 37)).save(d / "odd.png")  # not divisible by the scale
    Image.new("L", (24, 24), 90).save(d / "grey.png")
    Image.new("RGB", (3, 3)).save(d / "tiny.png")  # smaller than 3 LR pixels
    Image.new("RGB", (4, 40)).save(d / "thin.png")  # 2 LR pixels wide: nothing left after the border crop
    (d / "corrupt.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning):
        summary = _evaluate(_args(data=d, out=tmp_path / "o", methods="bicubic"))
    assert summary["n_images"] == 2 and set(summary["skipped"]) == {"tiny.png", "thin.png", "corrupt.png"}
    odd = next(r for r in _rows(tmp_path / "o") if r["image"] == "odd.png")
    assert (odd["width"], odd["height"]) == ("40", "36")  # cropped to a multiple of 2
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "corrupt.png").write_bytes(b"junk")
    with pytest.raises(UserError, match="no image could be evaluated"), pytest.warns(UserWarning):
        _evaluate(_args(data=only_bad, out=tmp_path / "o3", methods="bicubic"))


class FakePipe:
    """Stands in for a loaded model: bicubic plus noise that shrinks with the number of steps and the temperature."""

    def __init__(self, scale=2, objective="diffusion"):
        self.scale = scale
        self.config = SimpleNamespace(diffusion=SimpleNamespace(objective=objective))
        self.sampling = SamplingConfig()

    def settings(self, sampling=None, **overrides):
        return dataclasses.replace(sampling or self.sampling, **overrides)

    def upscale_tensor(self, lr, *, seed, sampling, progress=None, callback=None):
        up = methods.BicubicUpscaler(self.scale)(lr, seed)
        rng = np.random.default_rng(seed[0])
        noise = sampling.temperature * rng.normal(0, 20.0 / sampling.steps * (2 if sampling.sampler == "ddpm" else 1),
                                                  up.shape) / 127.5
        return (up + torch.from_numpy(noise).float()).clamp(-1, 1)

    def count_evaluations(self, h, w, sampling):
        return sampling.steps


def test_diffusion_and_regression_methods_and_step_curves(tmp_path, monkeypatch):
    monkeypatch.setattr(methods, "load", lambda path, **kw: FakePipe(objective="regression" if path.name == "reg"
                                                                      else "diffusion"))
    hr = _hr_folder(tmp_path, 2)
    out = tmp_path / "o"
    summary = _evaluate(_args(data=hr, out=out, methods="bicubic,regression,sr3", model=tmp_path / "diff",
                                      regression_model=tmp_path / "reg", steps=10, steps_curve="2,8",
                                      curve_samplers="ddim,ddpm", feature_extractor="random"))
    assert set(summary["methods"]) == {"bicubic", "regression", "sr3"}
    assert summary["methods"]["sr3"]["steps"] == 10
    curve = {p["steps"]: p["metrics"]["psnr_y"]["mean"] for p in summary["curves"]["ddim"]}
    assert curve[8] > curve[2]  # fewer steps, more noise in the fake
    assert len(_rows(out)) == 2 * (3 + 4)
    html = (out / "report.html").read_text()
    assert "Quality vs sampling steps" in html and html.count("data:image/png") > 4
    with pytest.raises(UserError, match="upscales 2x, not 4x"):
        _evaluate(_args(data=hr, out=tmp_path / "o2", methods="sr3", model=tmp_path / "diff", scale=4))
    with pytest.raises(UserError, match="--objective regression"):
        _evaluate(_args(data=hr, out=tmp_path / "o2", methods="regression", regression_model=tmp_path / "diff"))


def test_temperatures_give_one_row_each_and_resume_refuses_other_sampling(tmp_path, monkeypatch):
    monkeypatch.setattr(methods, "load", lambda path, **kw: FakePipe())
    hr = _hr_folder(tmp_path, 2)
    out = tmp_path / "o"
    summary = _evaluate(_args(data=hr, out=out, methods="bicubic,sr3", model=tmp_path / "diff", steps=2,
                                      temperatures="0,0.5,1"))
    assert set(summary["methods"]) == {"bicubic", "sr3@t0", "sr3@t0.5", "sr3@t1"}
    psnr = {k: v["metrics"]["psnr_rgb"]["mean"] for k, v in summary["methods"].items()}
    assert psnr["sr3@t0"] == pytest.approx(psnr["bicubic"])  # no noise at all: the fake's mean, bicubic
    assert psnr["sr3@t0"] > psnr["sr3@t0.5"] > psnr["sr3@t1"]
    assert summary["methods"]["sr3@t0.5"]["temperature"] == 0.5
    with pytest.raises(UserError, match=r"sr3@t0 rows were sampled with .*'steps': 2.*not .*'steps': 5"):
        _evaluate(_args(data=hr, out=out, methods="sr3", model=tmp_path / "diff", steps=5,
                        temperatures="0,0.5,1"))
    with pytest.raises(UserError, match="outside"):
        _evaluate(_args(data=hr, out=tmp_path / "o2", methods="sr3", model=tmp_path / "d", temperatures="2"))


def test_the_method_registry_builds_classic_methods(bank):
    lr = shapes_image(3, 16)
    bic = methods.build_method("bicubic", methods.MethodOptions(scale=3))
    assert bic.name == "bicubic" and bic.upscale_pil(lr).size == (48, 48)
    r = methods.build_method("raisr", methods.MethodOptions(scale=2, model_dirs={"raisr": bank}))
    assert r.scale == 2 and r.upscale_pil(lr).size == (32, 32)
    with pytest.raises(UserError, match="unknown method"):
        methods.build_method("nearest", methods.MethodOptions(scale=2))


def test_an_external_output_folder_is_scored_like_a_builtin_method(tmp_path):
    hr = _hr_folder(tmp_path, 2)
    outputs = tmp_path / "other_tool"
    outputs.mkdir()
    for f in sorted(hr.iterdir()):  # "another upscaler": the HR image off by at most 2 grey levels, as TIFF
        arr = np.asarray(Image.open(f).convert("RGB")).astype(np.int16)
        Image.fromarray(np.clip(arr + 2, 0, 255).astype(np.uint8)).save(outputs / (f.stem + ".tif"))
    summary = _evaluate(_args(data=hr, out=tmp_path / "o", methods=f"bicubic,mine={outputs}"))
    assert set(summary["methods"]) == {"bicubic", "mine"} and summary["methods"]["mine"]["n_images"] == 2
    assert summary["methods"]["mine"]["metrics"]["psnr_rgb"]["mean"] >= 20 * np.log10(255 / 2) - 0.01  # 42.1 dB
    (outputs / "img1.tif").unlink()
    with pytest.warns(UserWarning, match="no output named img1"):
        summary = _evaluate(_args(data=hr, out=tmp_path / "o2", methods=f"mine={outputs}"))
    assert summary["methods"]["mine"]["n_images"] == 1
